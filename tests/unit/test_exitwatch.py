"""rgrid_runner.runner.ExitWatch: the runner's wait for the sandbox wakes when it exits."""
import subprocess
import sys
import time

from rgrid_runner.runner import ExitWatch


def _sleeper(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_wait_returns_when_the_process_exits_not_at_the_timeout():
    proc = _sleeper(0.3)
    watch = ExitWatch(proc)
    try:
        assert watch.fd is not None  # Linux 5.3+: a pidfd, no polling
        t0 = time.monotonic()
        watch.wait(120)
        # It woke because the process ended (a wait that ran to its timeout would take 120 s).
        assert time.monotonic() - t0 < 60
        assert proc.poll() == 0
    finally:
        watch.close()


def test_wait_times_out_while_the_process_runs():
    proc = _sleeper(30)
    watch = ExitWatch(proc)
    try:
        watch.wait(0.1)
        assert proc.poll() is None
    finally:
        watch.close()
        proc.kill()
        proc.wait()


def test_without_a_pidfd_it_falls_back_to_popen_wait():
    proc = _sleeper(0.2)
    watch = ExitWatch(proc)
    watch.close()  # as on a kernel without pidfd_open
    assert watch.fd is None
    watch.wait(120)
    assert proc.returncode == 0
    watch.close()  # closing twice is harmless
