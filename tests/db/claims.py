"""The lease half of a claim: most lifecycle tests only need the fencing token, not the run's spec."""
from rgrid_service import lifecycle


def claim(engine, execution_id: str, worker_id: str):
    claimed = lifecycle.claim_run(engine, execution_id, worker_id)
    return claimed[0] if claimed else None
