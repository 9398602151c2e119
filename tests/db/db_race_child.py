"""Child side of the multi-process claim race (imported by spawned processes, so keep it light)."""
from __future__ import annotations


def race(url: str, execution_id: str, worker_id: str, barrier, results) -> None:
    from sqlalchemy import text

    from tests.db.claims import claim
    from rgrid_service.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:  # connect before the barrier: race the UPDATE, not the connect
            conn.execute(text("SELECT 1"))
        barrier.wait()
        lease = claim(engine, execution_id, worker_id)
        results.put((worker_id, None if lease is None else lease.attempt, None))
    except BaseException as e:  # noqa: BLE001 - report anything to the parent
        results.put((worker_id, None, repr(e)))
    finally:
        engine.dispose()
