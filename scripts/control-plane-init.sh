#!/usr/bin/env bash
# Prepares a stack of the control plane (the Pulumi project at the repository root):
#
#   scripts/control-plane-init.sh STACK [PULUMI_ARGS...]
#
# Selects STACK (creating it if needed), then sets every secret that is not set yet, encrypted in
# the stack's config with `pulumi config set --secret`: databasePassword, s3AccessKey,
# s3SecretKey, rayToken (the Ray cluster's token), secretKey (the control plane's own: worker
# tokens and sealed env values; random, URL-safe), apiKey (`rg_` + random: the first operator
# key; the server stores only its sha256) and hcloud:token (from HCLOUD_TOKEN, else asked for
# without echo). Values reach pulumi on stdin, never on a command line, and are never printed.
# Sets `repository` (the git URL the server installs RGrid from) to this checkout's `origin` if
# it is not set. Running it again changes nothing that is set.
#
# PULUMI_ARGS (for example `--cwd DIR`) are passed to every pulumi command. The engine is the one
# scripts/pulumi-engine.sh ensures, unless PULUMI names another `pulumi`. Non-interactive use
# needs PULUMI_CONFIG_PASSPHRASE (or _FILE) and a backend (`pulumi login`, PULUMI_BACKEND_URL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "control-plane-init: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || die "usage: $0 STACK [PULUMI_ARGS...]"
STACK="$1"
shift
EXTRA=("$@")
if [ -z "${PULUMI:-}" ]; then
    PULUMI="$("$ROOT/scripts/pulumi-engine.sh" ensure | tail -n 1)/pulumi"
fi
cd "$ROOT"

p() { "$PULUMI" "$@" --stack "$STACK" ${EXTRA[@]+"${EXTRA[@]}"}; }
has() { p config get "$1" >/dev/null 2>&1; }
set_secret() { printf '%s' "$2" | p config set --secret "$1" >/dev/null; }
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

"$PULUMI" stack select --create "$STACK" ${EXTRA[@]+"${EXTRA[@]}"} >/dev/null

for key in databasePassword s3AccessKey s3SecretKey secretKey rayToken; do
    has "$key" || { set_secret "$key" "$(random)"; echo "set $key (secret)"; }
done
has apiKey || { set_secret apiKey "rg_$(random)"; echo "set apiKey (secret)"; }

if ! has hcloud:token; then
    token="${HCLOUD_TOKEN:-}"
    if [ -z "$token" ]; then
        [ -t 0 ] || die "set HCLOUD_TOKEN to your Hetzner Cloud API token (Console → Security → API tokens), or run this in a terminal to be asked for it."
        read -rsp "Hetzner Cloud API token (read & write): " token
        echo
    fi
    [ ${#token} -eq 64 ] || die "a Hetzner Cloud API token has 64 characters; this one has ${#token}. Copy it again from the Hetzner console."
    set_secret hcloud:token "$token"
    echo "set hcloud:token (secret)"
fi

if ! has repository; then
    url="$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)"
    # The server clones it and workers pip-install it without keys: an SSH remote becomes https.
    case "$url" in git@*:*) url="https://$(printf '%s' "${url#git@}" | sed 's|:|/|')" ;; esac
    if [ -n "$url" ]; then
        p config set repository "$url" >/dev/null
        echo "set repository = $url"
    else
        echo "Set the git URL the server installs RGrid from: pulumi config set repository URL --stack $STACK" >&2
    fi
fi
echo "Stack $STACK is ready: pulumi up --stack $STACK"
