"""tools/pulumi/pulumi-language-python, driven as the Pulumi CLI drives a language plugin: started
in the program's folder with the engine's address as its argument, it prints a port on its first
line, answers gRPC there with the interpreter of the project's virtualenv, and stops quietly on
SIGINT. (Preview, up and destroy through the real CLI: tests/fleet/test_control_plane_stack.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

from tests.conftest import ctrl_c_default

LAUNCHER = Path(__file__).resolve().parents[2] / "tools" / "pulumi" / "pulumi-language-python"


def test_serves_the_project_with_its_virtualenv_and_stops_on_sigint(tmp_path):
    project = tmp_path / "project"
    (project / "prog").mkdir(parents=True)
    (project / "venv").symlink_to(sys.prefix)  # the test's own virtualenv, under a name of the project's
    (project / "Pulumi.yaml").write_text(
        "name: t\nruntime:\n  name: python\n  options:\n    virtualenv: venv  # relative to Pulumi.yaml\nmain: prog\n")
    (project / "prog" / "__main__.py").write_text("import pulumi\n")
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_PYTHON_CMD"}
    proc = subprocess.Popen([str(LAUNCHER), "127.0.0.1:1"], cwd=project / "prog", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default)
    try:
        port = int(proc.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = language_pb2_grpc.LanguageRuntimeStub(channel)
            about = stub.About(language_pb2.AboutRequest(), timeout=30)
            assert about.executable == str(project / "venv" / "bin" / "python")
            assert list(stub.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(), timeout=30).packages) == []
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
