"""Runtimes a script can ask for with --runtime. The runner maps each to an interpreter."""
SUPPORTED_RUNTIMES = ("python:3.11",)
DEFAULT_RUNTIME = "python:3.11"
