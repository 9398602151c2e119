#!/usr/bin/env bash
# Install what RGrid needs on a fresh Debian/Ubuntu machine: system packages (bubblewrap for the
# sandbox, PostgreSQL for the DB tests) and a virtualenv in .venv with the project and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
"$PY" -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${1:-}" = "--with-tests" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

# The python:3.11 runtime runs scripts with this machine's python3.11 (Debian 12's python3).
if ! command -v python3.11 >/dev/null 2>&1; then
  apt-get install -y -qq python3.11 >/dev/null 2>&1 ||
    echo "Warning: no python3.11 here, so the python:3.11 runtime cannot run scripts on this machine." >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[service,dev]'
echo "Set up: .venv is ready (activate it with 'source .venv/bin/activate')."
