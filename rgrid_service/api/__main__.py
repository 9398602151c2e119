"""The API server: `python -m rgrid_service.api --host H --port P [--workers N]`.

uvicorn (uvloop, httptools) serving create_app in RGRID_API_WORKERS processes (1 unless told;
the local grid runs one, the control plane several). With more than one, uvicorn's supervisor
starts them on the one port (the kernel spreads connections over them) and starts again one that
dies; they share nothing but the database, so whatever a process keeps for itself (the verified
keys, its follow streams and their cap, the queue's bell socket) is per process, and their
Prometheus figures meet in files in one folder (prometheus-client's multiprocess mode):
RGRID_API_METRICS_DIR, emptied at start since an earlier server's counts are not this one's, or a
folder made for this start and removed at its end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

APP = "rgrid_service.api.app:create_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_folder(configured: str | None) -> tuple[Path, bool]:
    """The folder the processes share their metrics in, empty, and whether it was made here."""
    if configured is None:
        return Path(tempfile.mkdtemp(prefix="rgrid-api-metrics-")), True
    folder = Path(configured)
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()
    return folder, False


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from ..settings import get_settings

    ap = argparse.ArgumentParser(prog="python -m rgrid_service.api", description="Serve the RGrid API.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: RGRID_API_WORKERS, else 1)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    settings = get_settings()
    workers = args.workers if args.workers is not None else settings.api_workers
    if workers < 1:
        ap.error(f"The API needs at least one process, not {workers}: set RGRID_API_WORKERS (or --workers) to 1 or more.")
    made = None
    if workers > 1:
        # Set before any process imports prometheus_client: it picks its mode at import.
        folder, was_made = metrics_folder(settings.api_metrics_dir)
        made = folder if was_made else None
        os.environ[MULTIPROC_ENV] = str(folder)
    try:
        uvicorn.run(APP, factory=True, host=args.host, port=args.port, workers=workers, loop="uvloop",
                    http="httptools", log_level=args.log_level)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
