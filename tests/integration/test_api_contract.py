"""The served OpenAPI is the API's contract: Schemathesis generates requests from it (valid ones and
invalid ones) against a real local grid, with an operator key, a tenant key and a worker token, and every
answer must be no server error, a documented status with a documented content type, a body the
schema describes, and a valid request accepted. Bounded: a few examples per operation.

It runs Schemathesis's engine (what `schemathesis run` runs: examples, coverage, fuzzing and stateful
phases) rather than its pytest plugin, whose lazy loader does not work with pytest 9.2."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from rgrid_service.auth import create_key
from rgrid_service.localgrid import grid as localgrid
from tests.conftest import GRID_ENV, Grid, missing, remove_grid_dirs, start_test_grid

pytestmark = pytest.mark.grid

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "valid_requests_are_accepted"]

# Creating an execution has rules across fields that JSON Schema cannot state; a schema-valid create
# refused for one of these (and only these) is not a contract failure.
OPERATOR_VIEWS = {"GET /v1/cluster", "GET /v1/workers", "GET /v1/fleet/preview", "GET /v1/fleet/history",
                  "GET /v1/fleet/costs", "GET /metrics"}
WORKER_VIEWS = {"POST /v1/worker/register", "POST /v1/worker/heartbeat"}
CREATES = {"/v1/executions", "/v1/executions/bulk"}
CREATES_OPS = {f"POST {path}" for path in CREATES}
ACROSS_FIELDS = ("must be one of the uploaded inputs", "Two inputs have the same name",
                 "send it together with a batch_id")


@schemathesis.check
def valid_requests_are_accepted(ctx, response, case):
    """Schemathesis's positive_data_acceptance, but for the creates' rules across fields."""
    if (case.path in CREATES and response.status_code == 400 and case.meta and case.meta.generation.mode.is_positive
            and any(rule in response.json().get("detail", "") for rule in ACROSS_FIELDS)):
        return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture(scope="module")
def contract_grid():
    if not shutil.which("bwrap"):
        missing("bubblewrap", "install it with `apt-get install bubblewrap` (make setup does).")
    # A followed run that does not end (one created and never submitted) ends its stream after 2 s.
    home, state = start_test_grid("rgc-", {**GRID_ENV, "RGRID_FOLLOW_MAX_SECONDS": "2"}, workers=1)
    try:
        grid = Grid(home, state)
        # The grid's own key is an operator key; a second tenant gets an ordinary one.
        grid.keys = {"operator": state.api_key, "tenant": create_key(grid.engine(), "contract-tenant"),
                     "worker": worker_token(home, "w-1")}
        # A run that ended, so the operator's lists hold an execution with its times, attempts and cost.
        ran = grid.submit("print('contract')\n")
        assert grid.wait_all([ran], timeout=180)[ran]["status"] == "succeeded"
        yield grid
    finally:
        localgrid.down(home)
        remove_grid_dirs(home)


def worker_token(home, worker_id: str) -> str:
    """The token the grid's worker holds (its agent reads it from the worker's environment)."""
    from rgrid_service.localgrid.bootstrap import secret_key
    from rgrid_service.secrets import keys_for
    from rgrid_service.settings import ServiceSettings

    return keys_for(ServiceSettings(_env_file=None, secret_key=secret_key(home))).worker_token(worker_id)


def run_schemathesis(api_url: str, key: str):
    """Every operation of the served schema, bounded; (responses by operation and status, failures)."""
    config = SchemathesisConfig.from_dict({
        "seed": 11,
        "base-url": api_url,
        "headers": {"Authorization": f"Bearer {key}"},
        "workers": 1,
        "request-timeout": 30,
        "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json", config=config)
    answered: dict[str, tuple[str, object]] = {}  # case id -> (operation, status): a recorder is reported more than once
    failures: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"error: {getattr(event, 'label', '')} {getattr(event, 'value', getattr(event, 'exception', ''))}")
        if not isinstance(event, events.ScenarioFinished):
            continue
        rec = event.recorder
        for case_id, interaction in rec.interactions.items():
            node = rec.cases.get(case_id)
            label = node.value.operation.label if node else rec.label  # a stateful sequence's step: its operation
            answered[case_id] = (label, interaction.response.status_code if interaction.response else "no response")
        for case_id, checks in rec.checks.items():
            for check in checks:
                if check.status == Status.FAILURE and check.failure_info:
                    f = check.failure_info.failure
                    answer = rec.interactions.get(case_id)
                    body = answer.response.content[:300] if answer and answer.response else b""
                    failures.append(f"{rec.label}: {check.name}: {f.title} {f.message} (answered {body!r})"[:900])
    return Counter(answered.values()), sorted(set(failures))


# The worker first: the operator's run may retire the grid's worker (POST /v1/workers/{id}/retire).
@pytest.mark.parametrize("who", ["worker", "operator", "tenant"])
def test_served_openapi_holds_for_generated_requests(contract_grid: Grid, who: str):
    seen, failures = run_schemathesis(contract_grid.state.api_url, contract_grid.keys[who])
    print(f"\nSchemathesis with the {who} key: {sum(seen.values())} generated cases over "
          f"{len({op for op, _ in seen})} operations")
    for (op, status), n in sorted(seen.items(), key=str):
        print(f"  {status} {op}: {n}")
    for failure in failures:
        print("  FAILED", failure)
    if failures:  # the server's side of a 500: its traceback
        from rgrid_service.localgrid.layout import logs_dir

        print((logs_dir(contract_grid.home) / "api.log").read_text(errors="replace")[-6000:])
    assert not failures, f"{len(failures)} contract failures (above)"
    answered = {op for op, status in seen if str(status).startswith("2")}
    # Every route without parameters answered with its data at least once (so its body was checked),
    # and so did the creates (their OpenAPI example) and reading a created run (stateful phase).
    with_data = {"GET /v1/health"} | WORKER_VIEWS if who == "worker" else (
        {"GET /v1/health", "GET /v1/executions", "GET /v1/executions/{execution_id}"} | CREATES_OPS |
        (OPERATOR_VIEWS if who == "operator" else set()))
    assert with_data <= answered, with_data - answered
