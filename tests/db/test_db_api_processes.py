"""The API in several processes (`python -m rgrid_service.api`, RGRID_API_WORKERS): each serves,
and a scrape of /metrics, whichever process answers it, adds up every process's figures (the wait
for a database connection, db/poolwait.py). SQLite: the processes share the database file."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from rgrid_service import auth
from rgrid_service.api.__main__ import metrics_folder
from rgrid_service.api.app import create_app
from rgrid_service.db.session import engine_for, make_engine, upgrade_schema
from rgrid_service.settings import ServiceSettings
from tests.db.conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scraped(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def per_process(folder: Path, scratch: Path) -> dict[str, dict[str, float]]:
    """Each process's own figures, read from its files alone."""
    figures = {}
    for histogram in folder.glob("histogram_*.db"):
        pid = histogram.stem.split("_", 1)[1]
        alone = scratch / f"{pid}-{time.monotonic_ns()}"
        alone.mkdir(parents=True)
        for f in folder.glob(f"*_{pid}.db"):
            shutil.copy(f, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        figures[pid] = {"count": registry.get_sample_value("rgrid_db_pool_wait_seconds_count") or 0.0,
                        "max": registry.get_sample_value("rgrid_db_pool_wait_max_seconds") or 0.0}
    return figures


def test_several_api_processes_serve_and_their_metrics_add_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'rgrid.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    key = auth.create_key(engine, "ops", scope=auth.OPERATOR_SCOPE)
    engine.dispose()
    folder, port = tmp_path / "metrics", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(RGRID_DATABASE_URL=url, RGRID_S3_ENDPOINT="127.0.0.1:1", RGRID_SECRET_KEY=SECRET_KEY,
               RGRID_API_WORKERS="2", RGRID_API_METRICS_DIR=str(folder), PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "rgrid_service.api", "--port", str(port), "--log-level", "warning"],
                              env=env, cwd=ROOT, start_new_session=True,
                              stdout=(tmp_path / "api.log").open("wb"), stderr=subprocess.STDOUT)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        # A new connection per request, so the kernel hands them to either process.
        served: dict[str, dict[str, float]] = {}
        for _ in range(100):
            for _ in range(5):
                with httpx.Client(base_url=base, headers=headers) as client:
                    assert client.get("/v1/executions").status_code == 200
            served = {pid: f for pid, f in per_process(folder, tmp_path / "alone").items() if f["count"] > 0}
            if len(served) == 2:
                break
        assert len(served) == 2, f"only these processes served: {served}"

        before = per_process(folder, tmp_path / "alone")
        metrics = scraped(httpx.get(f"{base}/metrics", headers=headers).text)
        after = per_process(folder, tmp_path / "alone")
        assert sum(f["count"] for f in before.values()) <= metrics["rgrid_db_pool_wait_seconds_count"] \
            <= sum(f["count"] for f in after.values())
        assert max(f["max"] for f in before.values()) <= metrics["rgrid_db_pool_wait_max_seconds"] \
            <= max(f["max"] for f in after.values())
        assert metrics["rgrid_queue_depth"] == 0  # the grid's own figures are there too
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)


def test_one_process_serves_its_own_pool_waits(tmp_path):
    url = f"sqlite:///{tmp_path / 'rgrid.db'}"
    upgrade_schema(url)
    app = create_app(ServiceSettings(_env_file=None, database_url=url, s3_endpoint="127.0.0.1:1", secret_key=SECRET_KEY))
    key = auth.create_key(app.state.engine, "ops", scope=auth.OPERATOR_SCOPE)
    try:
        with TestClient(app) as api:
            metrics = scraped(api.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text)
        assert metrics["rgrid_db_pool_wait_seconds_count"] >= 1 and metrics["rgrid_db_pool_wait_max_seconds"] >= 0
    finally:
        engine_for(url).dispose()


def test_a_configured_metrics_folder_starts_empty(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "counter_123.db").write_bytes(b"old")
    folder, made = metrics_folder(str(tmp_path / "m"))
    assert folder == tmp_path / "m" and not made and list(folder.iterdir()) == []
    folder, made = metrics_folder(None)
    assert made and folder.is_dir() and list(folder.iterdir()) == []
    folder.rmdir()
