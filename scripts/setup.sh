#!/usr/bin/env bash
# Install what RGrid needs on a fresh Debian/Ubuntu machine and create .venv with the project.
#
#   scripts/setup.sh               what `make demo` needs: bubblewrap, and .venv with the service extra
#   scripts/setup.sh --with-tests  also PostgreSQL, cloud-init (its schema check), iproute2, the dev
#                                  and fleet extras, and the Pulumi engine with the hcloud plugin
#                                  (built once from the Go module proxy into ~/.cache/rgrid); as root
#                                  also docker.io, docker-registry and mmdebstrap, and the runtime
#                                  images built from Debian's packages (cached in ~/.cache/rgrid)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TESTS=0
[ "${1:-}" = "--with-tests" ] && TESTS=1

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
"$PY" -c "import venv, ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
# The python:3.11 runtime runs scripts with the machine's own python3.11 (Debian 12's python3),
# which the sandbox mounts read-only: an interpreter under a home folder (pyenv) is not visible there.
[ -x /usr/bin/python3.11 ] || need_apt+=(python3.11)
if [ $TESTS = 1 ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v cloud-init >/dev/null 2>&1 || need_apt+=(cloud-init)
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
  # The Docker runtime's tests: an engine and a registry they start themselves, images built by mmdebstrap.
  command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
  command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  # cloud-init is installed for its schema checker only: nothing here boots with it.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ $TESTS = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[service,fleet,dev]'
  # The real Pulumi engine and hcloud plugin: a pulumi on PATH if new enough, else a cached build.
  engine_dir=$(scripts/pulumi-engine.sh ensure | tail -n 1)
  echo "Pulumi engine: $engine_dir/pulumi"
  # The runtime catalogue's images, from Debian's packages into the registry kept under
  # ~/.cache/rgrid/registry: only an image whose recipe changed is built (a private dockerd, needs root).
  if [ "$(id -u)" -eq 0 ]; then
    .venv/bin/python -m rgrid_service.images \
      || echo "The runtime images could not be built (see above); tests/docker will say so when they run."
  fi
else
  .venv/bin/python -m pip install -q -e '.[service]'
fi
echo "Set up: .venv is ready (activate it with 'source .venv/bin/activate')."
