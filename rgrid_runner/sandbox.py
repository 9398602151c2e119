"""The bubblewrap sandbox a script runs in: /work its only writable place, no network, and limits.

When the runner is root, the script runs as an unprivileged user id of its own (so the process
limit is really enforced); inside the sandbox it appears as uid 1000.
"""
from __future__ import annotations

import os
import resource
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from rgrid_core.runtimes import SUPPORTED_RUNTIMES

# Interpreters a runtime may use, first one found wins.
RUNTIME_INTERPRETERS = {"python:3.11": ["/usr/bin/python3.11", "/usr/local/bin/python3.11", "python3.11"]}
SANDBOX_UID_BASE = 200_000


class SandboxError(Exception):
    pass


@dataclass(frozen=True)
class Limits:
    wall_seconds: int
    cpu_seconds: int
    memory_mb: int
    max_processes: int
    max_file_mb: int


_found: dict[str, str] = {}


def find_tool(name: str) -> str | None:
    """The path of a program (absolute, or looked up on PATH), remembered once found: every run
    needs the same four (bwrap, prlimit, setpriv, the interpreter), and looking each up on PATH
    again cost a tenth of a no-op run's runner CPU. One that is missing is looked for again next
    time (it may be installed meanwhile)."""
    path = _found.get(name)
    if path is None:
        path = name if os.path.isabs(name) and os.path.exists(name) else (
            None if os.path.isabs(name) else shutil.which(name))
        if path:
            _found[name] = path  # one value per name: threads writing it at once write the same
    return path


def resolve_interpreter(runtime: str) -> str:
    if runtime not in RUNTIME_INTERPRETERS:
        raise SandboxError(f"Unknown runtime {runtime!r}. Valid runtimes: {', '.join(SUPPORTED_RUNTIMES)}.")
    for candidate in RUNTIME_INTERPRETERS[runtime]:
        found = find_tool(candidate)
        if found:
            return found
    raise SandboxError(f"This worker has no interpreter for {runtime}; install python3.11 on it.")


def sandbox_uid() -> int | None:
    """A fresh unprivileged uid per run when we are root; None when we already are unprivileged."""
    if os.geteuid() != 0:
        return None
    return SANDBOX_UID_BASE + secrets.randbelow(100_000)


def hand_over(workdir: Path, uid: int | None) -> None:
    """Give the staged /work to the run's own uid (no-op when the runner is unprivileged)."""
    if uid is None:
        return
    for dirpath, _dirs, files in os.walk(workdir):
        os.chown(dirpath, uid, uid)
        for f in files:
            os.lchown(os.path.join(dirpath, f), uid, uid)


def script_env(user_env: dict[str, str]) -> dict[str, str]:
    """The script's whole environment. It reaches the sandbox as bwrap's own environment (not as
    --setenv arguments), so secret values never appear in a process list."""
    base = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/work",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # output streams to the user as it is printed
        "RGRID": "1",
    }
    return {**base, **user_env}


def bwrap_command(workdir: Path, interpreter: str, script: str, args: list[str]) -> list[str]:
    bwrap = find_tool("bwrap")
    if not bwrap:
        raise SandboxError("bubblewrap (bwrap) is not installed on this worker; install the 'bubblewrap' package.")
    cmd = [
        bwrap,
        "--unshare-all",  # no network, own pid/ipc/uts/user namespaces
        "--die-with-parent",
        "--new-session",
        "--uid", "1000", "--gid", "1000",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin",
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/localtime", "/etc/localtime",
        "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
        "--ro-bind-try", "/etc/ssl", "/etc/ssl",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--bind", str(workdir), "/work",
        "--chdir", "/work",
    ]
    real = os.path.realpath(interpreter)
    if not real.startswith("/usr/"):
        # An interpreter installed elsewhere (pyenv, /opt): make its prefix visible read-only.
        prefix = str(Path(real).parent.parent)
        cmd += ["--ro-bind", prefix, prefix]
    return cmd + ["--", interpreter, script, *args]


def set_spawn_niceness(niceness: int) -> None:
    """Make what this thread starts next run at `niceness`.

    Linux keeps niceness per thread and a child inherits its creator's: setting it on the thread
    that spawns the sandbox gives the whole sandbox that niceness, race-free. Ray runs the runner
    in a worker process at niceness 15, which the sandbox otherwise inherits. Going below the
    current niceness needs root (CAP_SYS_NICE); without it the inherited niceness stays."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        pass


def limited_command(cmd: list[str], limits: Limits, uid: int | None) -> list[str]:
    """cmd under the run's resource limits and, when we are root, the run's own uid.

    The limits are set by `prlimit` and the uid by `setpriv` (both util-linux), each of which then
    execs the next: no Python code has to run between fork and exec, so the runner can start the
    sandbox with vfork. Forking a whole Ray worker process (a preexec_fn rules vfork out) took
    8 ms per run, a third of a no-op script's run. Same limits as preexec()."""
    prlimit, setpriv = find_tool("prlimit"), find_tool("setpriv")
    if not prlimit or (uid is not None and not setpriv):
        raise SandboxError("This worker lacks prlimit/setpriv; install the 'util-linux' package.")
    mem = limits.memory_mb * 1024 * 1024
    size = limits.max_file_mb * 1024 * 1024
    wrapped = [
        prlimit,
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 5}",
        f"--as={mem}:{mem}",
        f"--nproc={limits.max_processes}:{limits.max_processes}",
        f"--fsize={size}:{size}",
        "--core=0:0",
        "--",
    ]
    if uid is not None:
        wrapped += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return wrapped + cmd


def preexec(limits: Limits):
    """Runs in the child before exec: resource limits that the whole sandbox inherits. (The runner
    uses limited_command(); this is the same limits applied in-process, for callers that fork
    anyway, such as the throughput benchmark's floor.)"""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        size = limits.max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply
