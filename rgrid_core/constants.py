"""Names that cross a process boundary: Ray labels, resources and actor names, exit codes."""
from __future__ import annotations

# A Ray worker node carries this label with its worker id, and this resource, one unit per slot.
WORKER_LABEL = "rgrid-worker"
SLOT_RESOURCE = "rgrid_slot"
SLOTS_PER_WORKER = 2  # a standard (2 vCPU) worker

# The Ray namespace of the grid's named actors (each worker node's runner).
RAY_NAMESPACE = "rgrid"
# The runner actor's class, named rather than imported: the control plane starts it without
# importing the worker side (rgrid_runner imports rgrid_service, never the other way round).
RUNNER_ACTOR = "rgrid_runner.task:RunnerActor"
# Each worker node's runner actor is found by this name and the node's Ray id.
RUNNER_NAME_PREFIX = "rgrid-runner-"

# `rgrid run` exit codes besides the script's own.
EXIT_TIMED_OUT = 124
EXIT_CANCELED = 130

# The longest requirements file `rgrid run --requirements` sends (the API refuses a longer one).
REQUIREMENTS_MAX_CHARS = 64 * 1024
