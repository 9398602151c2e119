"""A control plane for worker API tests: the real app (TestClient) on the test's database and a real
SeaweedFS, with tenants that submit runs through the tenant API and workers that hold only a token."""
from __future__ import annotations

import base64
import hashlib
import uuid

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from rgrid_core import workerwire as wire
from rgrid_service import lifecycle
from rgrid_service.api.app import create_app
from rgrid_service.auth import create_key
from rgrid_service.db.models import Execution
from rgrid_service.db.session import engine_for
from rgrid_service.fleet import records
from rgrid_service.secrets import keys_for
from rgrid_service.settings import ServiceSettings
from rgrid_service.storage import ObjectStore
from tests.db.conftest import SECRET_KEY


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Worker:
    """One worker as its agent and runner see the control plane: an id and a token, nothing else."""

    def __init__(self, plane: "ControlPlane", worker_id: str, token: str):
        self.plane, self.id, self.token = plane, worker_id, token

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, json=None, **ids):
        return self.plane.client.post(path.format(**ids), json=json, headers=self.headers)

    def get(self, path: str, **ids):
        return self.plane.client.get(path.format(**ids), headers=self.headers)

    def register(self):
        return self.post(wire.REGISTER, {"slots": 2, "provider": "local"})

    def claim(self, run: str):
        return self.post(wire.CLAIM, id=run)

    def renew(self, run: str, attempt: int, text: bytes = b"", stages=None):
        logs = [{"stream": "stdout", "data_b64": b64(text)}] if text else []
        return self.post(wire.RENEW, {"logs": logs, "stages": stages or {}}, id=run, attempt=attempt)

    def output_urls(self, run: str, attempt: int, files: dict[str, bytes]):
        return self.post(wire.OUTPUT_URLS, {"files": [{"path": p, "size": len(b)} for p, b in files.items()]},
                         id=run, attempt=attempt)

    def upload(self, run: str, attempt: int, files: dict[str, bytes]) -> list[dict]:
        """Outputs through their presigned PUTs; returns them as a finish commits them."""
        r = self.output_urls(run, attempt, files)
        assert r.status_code == 200, r.text
        for url in r.json()["urls"]:
            put = httpx.put(url["url"], content=files[url["path"]])
            assert put.status_code == 200, put.text
        return [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in files.items()]

    def finish(self, run: str, attempt: int, status: str = "succeeded", outputs=(), exit_code: int | None = 0,
               logs=()):
        """logs: (stream, data_b64) pairs, the script's last output carried by the finish."""
        return self.post(wire.FINISH, {"status": status, "exit_code": exit_code, "outputs": list(outputs),
                                       "logs": [{"stream": s, "data_b64": d} for s, d in logs]},
                         id=run, attempt=attempt)


class ControlPlane:
    def __init__(self, db_url: str, seaweed: tuple[str, str, str], secret_key: str | None = SECRET_KEY):
        endpoint, access, secret = seaweed
        self.settings = ServiceSettings(_env_file=None, database_url=db_url, s3_endpoint=endpoint, s3_access_key=access,
                                        s3_secret_key=secret, s3_bucket="t" + uuid.uuid4().hex[:20],
                                        secret_key=secret_key)
        self.store = ObjectStore(self.settings)
        self.store.ensure_bucket()
        self.engine = engine_for(db_url)
        self.client = TestClient(create_app(self.settings))
        self._tenants: dict[str, str] = {}

    def close(self):
        self.client.close()
        self.engine.dispose()

    # --- tenants -----------------------------------------------------------------------------------

    def tenant(self, name: str = "tenant-a") -> dict:
        if name not in self._tenants:
            self._tenants[name] = create_key(self.engine, name)
        return {"Authorization": f"Bearer {self._tenants[name]}"}

    def submit(self, tenant: str = "tenant-a", env: dict | None = None,
               files: dict[str, bytes] | None = None) -> str:
        """A run created, uploaded and submitted through the tenant API; returns its id."""
        files = files or {"job.py": b"print('hi')\n"}
        specs = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "md5": hashlib.md5(b).hexdigest()}
                 for n, b in files.items()]
        created = self.client.post("/v1/executions", headers=self.tenant(tenant),
                                   json={"script": next(iter(files)), "inputs": specs, "env": env or {}})
        assert created.status_code == 201, created.text
        body = created.json()
        for upload in body["uploads"]:
            assert httpx.put(upload["url"], content=files[upload["name"]]).status_code == 200
        submitted = self.client.post(f"/v1/executions/{body['id']}/submit", headers=self.tenant(tenant))
        assert submitted.status_code == 200, submitted.text
        return body["id"]

    def row(self, run: str):
        with self.engine.connect() as conn:
            return conn.execute(select(Execution).where(Execution.id == run)).first()

    # --- workers -----------------------------------------------------------------------------------

    def worker(self, register: bool = True) -> Worker:
        """A new worker record (as the fleet writes it) and its token; registered (active) by default."""
        (worker_id,) = records.request_workers(self.engine, 1, "local", "local", "local", 2)
        worker = Worker(self, worker_id, keys_for(self.settings).worker_token(worker_id))
        if register:
            assert worker.register().status_code == 200
        return worker

    def dispatch(self, run: str, worker: Worker) -> None:
        assert lifecycle.mark_dispatched(self.engine, [(run, worker.id)]) == [(run, worker.id)]

    def claimed(self, worker: Worker, tenant: str = "tenant-a", **submit) -> tuple[str, dict]:
        """A run submitted, dispatched to this worker and claimed by it: (run id, claim answer)."""
        run = self.submit(tenant, **submit)
        self.dispatch(run, worker)
        r = worker.claim(run)
        assert r.status_code == 200, r.text
        return run, r.json()
