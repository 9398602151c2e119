#!/usr/bin/env bash
# The one entry point for the Pulumi engine (CLI) and the hcloud resource plugin.
#
#   scripts/pulumi-engine.sh ensure
#       Makes sure a `pulumi` of the pinned version (or newer) and the hcloud plugin of the
#       pinned version exist; the last line of stdout is the directory that holds `pulumi`.
#       Uses a `pulumi` on PATH when it is new enough and a pulumi-resource-hcloud of the
#       pinned version is found beside it, on PATH or in ${PULUMI_HOME:-~/.pulumi}/plugins;
#       otherwise builds both from the Go module proxy into
#       ${RGRID_TOOLS_CACHE:-~/.cache/rgrid}/pulumi/v<PULUMI_VERSION>-hcloud<HCLOUD_VERSION>/
#       (bin/pulumi and plugin/pulumi-resource-hcloud; once, later calls reuse it) and logs
#       build seconds and binary sizes to build-info.txt there. Every call also installs the
#       project's Python language plugin (tools/pulumi/pulumi-language-python) beside the
#       cached `pulumi` (a copy, refreshed when it differs; never a rebuild), so `pulumi up` of a
#       `runtime: python` project works.
#   scripts/pulumi-engine.sh install-plugin PULUMI_HOME
#       Runs `pulumi plugin install resource hcloud <HCLOUD_VERSION> --file <plugin>` with that
#       PULUMI_HOME (no network). Ensures first.
#   scripts/pulumi-engine.sh plugin-path
#       Ensures, then prints the path of the pulumi-resource-hcloud binary (last line).
#   scripts/pulumi-engine.sh build
#       Builds into the cache even if a usable engine exists (replaces the cached one).
#
# Pins: tools/pulumi/versions.env. Sources: tools/pulumi/cli and tools/pulumi/hcloud.
# Environment: RGRID_TOOLS_CACHE (cache root), RGRID_GO_BUILD_P (go build -p, default 2),
# GO (the go command; default `go` on PATH, then /usr/local/go/bin/go).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools/pulumi"
# shellcheck source=../tools/pulumi/versions.env
. "$TOOLS/versions.env"

CACHE_ROOT="${RGRID_TOOLS_CACHE:-${HOME:?HOME or RGRID_TOOLS_CACHE must be set}/.cache/rgrid}"
CACHE_DIR="$CACHE_ROOT/pulumi/v${PULUMI_VERSION}-hcloud${HCLOUD_VERSION}"
BIN_DIR="$CACHE_DIR/bin"
# The plugin is kept apart from `pulumi`: the Automation API puts pulumi's folder on PATH, and a
# plugin found on PATH is used whatever version is asked, with a warning on every run. Installed
# into PULUMI_HOME (install-plugin), it is found by its version.
PLUGIN_DIR="$CACHE_DIR/plugin"
BUILD_P="${RGRID_GO_BUILD_P:-2}"

ENGINE_DIR=""
PLUGIN_FILE=""

log() { echo "pulumi-engine: $*" >&2; }
die() { echo "pulumi-engine: $*" >&2; exit 1; }

# version_ge A B: A >= B (dotted numbers, no leading v).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

# find_plugin DIR: prints a pulumi-resource-hcloud of HCLOUD_VERSION beside DIR's pulumi, on
# PATH, or installed in PULUMI_HOME.
find_plugin() {
    local c v
    for c in "$1/pulumi-resource-hcloud" \
        "$(command -v pulumi-resource-hcloud 2>/dev/null || true)" \
        "${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-hcloud-v${HCLOUD_VERSION}/pulumi-resource-hcloud"; do
        [ -n "$c" ] && [ -f "$c" ] && [ -x "$c" ] || continue
        v="$("$c" -version 2>/dev/null | head -n1 || true)"
        if [ "${v#v}" = "$HCLOUD_VERSION" ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# use_path_engine: a pulumi on PATH that is new enough, with the pinned plugin.
use_path_engine() {
    local p v dir plugin
    p="$(command -v pulumi 2>/dev/null)" || return 1
    v="$(PULUMI_SKIP_UPDATE_CHECK=true "$p" version 2>/dev/null | head -n1 || true)"
    v="${v#v}"
    [ -n "$v" ] && version_ge "$v" "$PULUMI_VERSION" || return 1
    dir="$(cd "$(dirname "$p")" && pwd)"
    plugin="$(find_plugin "$dir")" || return 1
    ENGINE_DIR="$dir"
    PLUGIN_FILE="$plugin"
}

# use_cache: the cached build, complete (build-info.txt is written last).
use_cache() {
    if [ -x "$BIN_DIR/pulumi-resource-hcloud" ]; then  # a build of the earlier layout
        mkdir -p "$PLUGIN_DIR" && mv "$BIN_DIR/pulumi-resource-hcloud" "$PLUGIN_DIR/"
    fi
    [ -x "$BIN_DIR/pulumi" ] && [ -x "$PLUGIN_DIR/pulumi-resource-hcloud" ] && [ -f "$CACHE_DIR/build-info.txt" ] || return 1
    ENGINE_DIR="$BIN_DIR"
    PLUGIN_FILE="$PLUGIN_DIR/pulumi-resource-hcloud"
}

find_go() {
    if [ -n "${GO:-}" ]; then
        command -v "$GO" >/dev/null 2>&1 && { command -v "$GO"; return 0; }
        return 1
    fi
    command -v go 2>/dev/null && return 0
    [ -x /usr/local/go/bin/go ] && { echo /usr/local/go/bin/go; return 0; }
    return 1
}

file_size() { wc -c <"$1" | tr -d ' '; }

build_all() {
    local go_cmd tmp t0 t1 t2 src out v
    go_cmd="$(find_go)" || die "no pulumi >= $PULUMI_VERSION with the hcloud $HCLOUD_VERSION plugin on PATH, and no Go to build them: install Go >= 1.26 (https://go.dev/dl/) and run this again."
    mkdir -p "$CACHE_ROOT/pulumi"

    # One build at a time per cache entry; a second caller waits, then reuses the result.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE_DIR.lock"
        flock 9
        if [ "${FORCE_BUILD:-0}" != 1 ] && use_cache; then
            return 0
        fi
    fi

    tmp="$(mktemp -d "$CACHE_ROOT/pulumi/.build.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/bin"
    log "building pulumi v$PULUMI_VERSION and pulumi-resource-hcloud $HCLOUD_VERSION with $("$go_cmd" version | cut -d' ' -f3) (-p $BUILD_P; a cold build takes a while)"

    t0=$(date +%s)
    (cd "$TOOLS/cli" && CGO_ENABLED=0 "$go_cmd" build -p "$BUILD_P" -trimpath -buildvcs=false \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
        -o "$tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) >&2
    t1=$(date +%s)
    log "pulumi built in $((t1 - t0)) s"

    # The plugin embeds a schema generated from the provider itself: build the generator,
    # run it into a temporary copy of the wrapper module, stamp the version, build the plugin.
    src="$tmp/hcloud-src"
    cp -R "$TOOLS/hcloud" "$src"
    out="$src/cmd/pulumi-resource-hcloud"
    rm -f "$out/schema.json" "$out/schema-embed.json" "$out/bridge-metadata.json"
    (cd "$src" && CGO_ENABLED=0 "$go_cmd" build -p "$BUILD_P" -trimpath -buildvcs=false \
        -ldflags "-s -w -X rgrid.local/tools/pulumi/hcloud/version.Version=$HCLOUD_VERSION" \
        -o "$tmp/pulumi-tfgen-hcloud" ./cmd/pulumi-tfgen-hcloud) >&2
    "$tmp/pulumi-tfgen-hcloud" schema --skip-docs --skip-examples --out "$out" >&2
    [ -s "$out/schema.json" ] && [ -s "$out/bridge-metadata.json" ] || die "pulumi-tfgen-hcloud wrote no schema"
    # Like upstream's build: schema-embed.json = schema.json with "version" set.
    [ "$(head -n1 "$out/schema.json")" = "{" ] || die "unexpected schema.json layout"
    { echo "{"; echo "    \"version\": \"$HCLOUD_VERSION\","; tail -n +2 "$out/schema.json"; } >"$out/schema-embed.json"
    (cd "$src" && CGO_ENABLED=0 "$go_cmd" build -p "$BUILD_P" -trimpath -buildvcs=false \
        -ldflags "-s -w -X rgrid.local/tools/pulumi/hcloud/version.Version=$HCLOUD_VERSION" \
        -o "$tmp/bin/pulumi-resource-hcloud" ./cmd/pulumi-resource-hcloud) >&2
    t2=$(date +%s)
    log "pulumi-resource-hcloud built in $((t2 - t1)) s"

    v="$(PULUMI_SKIP_UPDATE_CHECK=true "$tmp/bin/pulumi" version | head -n1)"
    [ "$v" = "v$PULUMI_VERSION" ] || die "built pulumi reports version '$v', expected v$PULUMI_VERSION"
    v="$("$tmp/bin/pulumi-resource-hcloud" -version | head -n1)"
    [ "$v" = "$HCLOUD_VERSION" ] || die "built plugin reports version '$v', expected $HCLOUD_VERSION"

    mkdir -p "$CACHE_DIR"
    cp "$out/schema-embed.json" "$tmp/schema.json"
    rm -rf "$BIN_DIR" "$PLUGIN_DIR" "$CACHE_DIR/schema.json" "$CACHE_DIR/build-info.txt"
    mkdir -p "$PLUGIN_DIR"
    mv "$tmp/bin/pulumi-resource-hcloud" "$PLUGIN_DIR/"
    mv "$tmp/bin" "$BIN_DIR"
    mv "$tmp/schema.json" "$CACHE_DIR/schema.json"
    {
        echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "go=$("$go_cmd" version | cut -d' ' -f3-)"
        echo "go_build_p=$BUILD_P"
        echo "pulumi_version=$PULUMI_VERSION"
        echo "hcloud_version=$HCLOUD_VERSION"
        echo "hcloud_tf_version=$HCLOUD_TF_VERSION"
        echo "bridge_version=$BRIDGE_VERSION"
        echo "pulumi_build_seconds=$((t1 - t0))"
        echo "hcloud_build_seconds=$((t2 - t1))"
        echo "total_build_seconds=$((t2 - t0))"
        echo "pulumi_bytes=$(file_size "$BIN_DIR/pulumi")"
        echo "pulumi_resource_hcloud_bytes=$(file_size "$PLUGIN_DIR/pulumi-resource-hcloud")"
    } >"$CACHE_DIR/build-info.txt.new"
    mv "$CACHE_DIR/build-info.txt.new" "$CACHE_DIR/build-info.txt"
    log "built into $BIN_DIR ($((t2 - t0)) s; figures in $CACHE_DIR/build-info.txt)"
    use_cache
}

# install_language_host: the launcher beside the cached pulumi (upstream's Go language host is not
# served by the module proxy; tools/pulumi/README.md). A pulumi found on PATH is left alone: it
# comes with its own language host, or the note says what to do.
install_language_host() {
    local src="$TOOLS/pulumi-language-python" dst="$ENGINE_DIR/pulumi-language-python"
    if [ "$ENGINE_DIR" != "$BIN_DIR" ]; then
        [ -x "$dst" ] || command -v pulumi-language-python >/dev/null 2>&1 ||
            log "note: no pulumi-language-python beside $ENGINE_DIR/pulumi or on PATH; copy $src there to run \`pulumi up\` of the control plane"
        return 0
    fi
    cmp -s "$src" "$dst" 2>/dev/null && [ -x "$dst" ] && return 0
    cp "$src" "$dst.new" && chmod 0755 "$dst.new" && mv "$dst.new" "$dst"
}

ensure() {
    use_path_engine || use_cache || build_all
    install_language_host
}

cmd="${1:-ensure}"
case "$cmd" in
ensure)
    ensure
    echo "$ENGINE_DIR"
    ;;
plugin-path)
    ensure
    echo "$PLUGIN_FILE"
    ;;
build)
    FORCE_BUILD=1 build_all
    install_language_host
    echo "$ENGINE_DIR"
    ;;
install-plugin)
    [ $# -eq 2 ] || die "usage: $0 install-plugin PULUMI_HOME"
    ensure
    mkdir -p "$2"
    PULUMI_HOME="$2" PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true \
        "$ENGINE_DIR/pulumi" plugin install resource hcloud "$HCLOUD_VERSION" --file "$PLUGIN_FILE" >&2
    echo "$2/plugins/resource-hcloud-v$HCLOUD_VERSION"
    ;;
-h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
*)
    die "unknown command '$cmd' (ensure, install-plugin PULUMI_HOME, plugin-path, build)"
    ;;
esac
