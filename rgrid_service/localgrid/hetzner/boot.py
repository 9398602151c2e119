"""Booting a "server": run the worker service its cloud-init user_data describes, as a local process.

Contract (cloud-init/worker.yaml is written to match): user_data is a `#cloud-config` document
whose write_files holds a file ending in `/rgrid/worker.env` (KEY=VALUE lines, the worker's
environment) and a systemd unit ending in `rgrid-worker.service` whose ExecStart= is the worker
command. Here "the image" is this machine with the project installed in the current venv, so the
command's program is looked up by its basename on a PATH that starts with sys.executable's directory.

Any other user_data (the control plane's cloud-init, a plain script) starts nothing: the server
still runs (status `running`), its cloud-init is not executed, and its log says why.
"""
from __future__ import annotations

import base64
import gzip
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..procs import group_alive


class BootError(Exception):
    """The user_data does not describe a worker we can start (a real server would boot without one)."""


@dataclass
class BootRequest:
    server_id: int
    name: str
    user_data: str
    log_path: Path
    workdir: Path


def _content(entry: dict) -> str:
    raw = entry.get("content", "") or ""
    encoding = str(entry.get("encoding", "") or "").lower()
    if encoding in ("b64", "base64"):
        return base64.b64decode(raw).decode()
    if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw)).decode()
    return str(raw)


def _env_lines(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _unit(text: str) -> tuple[str, dict[str, str]]:
    """(ExecStart command line, Environment= settings) of a systemd unit."""
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    exec_start, env = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ExecStart="):
            exec_start = line[len("ExecStart="):].strip()  # the last one wins; an empty one resets
        elif line.startswith("Environment="):
            for word in shlex.split(line[len("Environment="):]):
                if "=" in word:
                    k, v = word.split("=", 1)
                    env[k] = v
    return exec_start, env


def _expand(words: list[str], env: dict[str, str]) -> list[str]:
    """systemd's rules: a lone $VAR splits into words, ${VAR} substitutes in place."""
    out = []
    for word in words:
        if m := re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word):
            out.extend(env.get(m.group(1), "").split())
        else:
            out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return out


def parse_user_data(user_data: str) -> tuple[list[str], dict[str, str]]:
    """The worker's argv (as written in ExecStart) and its environment, from the cloud-config."""
    if not (user_data or "").lstrip().startswith("#cloud-config"):
        raise BootError("user_data is not a #cloud-config document")
    try:
        doc = yaml.safe_load(user_data) or {}
    except yaml.YAMLError as e:
        raise BootError(f"user_data is not valid YAML: {e}") from None
    env_text, unit_text = "", None
    for entry in doc.get("write_files") or []:
        path = str(entry.get("path", ""))
        if path.endswith("/rgrid/worker.env"):
            env_text = _content(entry)
        elif path.endswith("rgrid-worker.service"):
            unit_text = _content(entry)
    if unit_text is None:
        raise BootError("user_data writes no rgrid-worker.service unit")
    exec_start, unit_env = _unit(unit_text)
    env = {**unit_env, **_env_lines(env_text)}  # EnvironmentFile= overrides Environment=
    words = shlex.split(exec_start)
    if words and words[0][:1] in "-@:+!":
        prefix = re.match(r"[-@:+!]+", words[0]).group(0)
        words[0] = words[0][len(prefix):]
        if "@" in prefix and len(words) > 1:
            del words[1]  # "@path argv0 args": we keep the program's own name
    argv = _expand(words, env)
    if not argv or not argv[0]:
        raise BootError("rgrid-worker.service has no ExecStart= command")
    return argv, env


def local_path(env_path: str | None) -> str:
    return os.pathsep.join([os.path.dirname(sys.executable)] + ([env_path] if env_path else []))


def spawn_worker(req: BootRequest) -> int | None:
    """The default booter: start the worker in its own session; its pid is the process group id."""
    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    req.workdir.mkdir(parents=True, exist_ok=True)
    with open(req.log_path, "ab") as log:
        try:
            argv, extra = parse_user_data(req.user_data)
            env = {**os.environ, **extra}
            # The local "image" has the project in this interpreter's folder, also when the unit
            # sets its own PATH (as a real server's does, for its install folder).
            env["PATH"] = local_path(env.get("PATH"))
            program = shutil.which(os.path.basename(argv[0]), path=env["PATH"])
            if program is None:
                raise BootError(f"{os.path.basename(argv[0])}: not found on {env['PATH']}")
            log.write(f"[boot] server {req.server_id} ({req.name}): {shlex.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen([program, *argv[1:]], env=env, cwd=req.workdir, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except (BootError, OSError) as e:
            log.write(f"[boot] server {req.server_id}: no worker started: {e}\n".encode())
            return None
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a reused pid from the one we started."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def stop_group(pgid: int, started: str | None = None, grace: float = 5.0) -> None:
    """The default killer: SIGTERM the group, SIGKILL what is left after grace seconds."""
    now_started = start_time(pgid)
    if started and now_started and now_started != started:
        return  # the leader's pid was reused: this is no longer our group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
