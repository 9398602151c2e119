"""Check that the hcloud plugin built here serves what the pinned pulumi-hcloud Python SDK asks for.

The plugin is bridged in tools/pulumi/hcloud rather than built from upstream's provider module,
so its schema is generated here. The SDK only works against it if every resource/function token
and every (camelCase) property name the SDK sends or reads exists in that schema.

    python tools/pulumi/check_sdk_schema.py SCHEMA_JSON [SDK_DIR]

SCHEMA_JSON: the cache's schema.json (beside bin/, written by scripts/pulumi-engine.sh).
SDK_DIR: the pulumi_hcloud package directory (default: the one importable here).
Exit 0 when everything the SDK uses is in the schema; prints what is missing otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TOKEN_RE = re.compile(r"'(hcloud:[A-Za-z0-9_/]+:[A-Za-z0-9_]+)'")
GETTER_RE = re.compile(r'@pulumi\.getter\(name="([^"]+)"\)')


def schema_names(schema: dict) -> tuple[set[str], set[str]]:
    tokens = set(schema.get("resources", {})) | set(schema.get("functions", {}))
    props: set[str] = set(schema.get("config", {}).get("variables", {}))
    props |= set(schema.get("provider", {}).get("inputProperties", {}))

    def add(spec: dict) -> None:
        for key in ("properties", "inputProperties"):
            props.update(spec.get(key, {}))
        state = spec.get("stateInputs") or {}
        props.update(state.get("properties", {}))
        for key in ("inputs", "outputs"):
            sub = spec.get(key) or {}
            props.update(sub.get("properties", {}))

    for section in ("resources", "functions", "types"):
        for spec in schema.get(section, {}).values():
            add(spec)
    return tokens, props


def sdk_names(sdk_dir: Path) -> tuple[set[str], set[str]]:
    tokens: set[str] = set()
    props: set[str] = set()
    for path in sdk_dir.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        tokens.update(TOKEN_RE.findall(text))
        props.update(GETTER_RE.findall(text))
    return tokens, props


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    schema = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if len(argv) == 3:
        sdk_dir = Path(argv[2])
    else:
        import pulumi_hcloud  # noqa: PLC0415 - only needed without an explicit directory

        sdk_dir = Path(pulumi_hcloud.__file__).parent
    s_tokens, s_props = schema_names(schema)
    k_tokens, k_props = sdk_names(sdk_dir)
    missing_tokens = sorted(k_tokens - s_tokens)
    missing_props = sorted(k_props - s_props)
    extra_tokens = sorted(s_tokens - k_tokens)
    print(f"schema: {len(s_tokens)} tokens; SDK {sdk_dir}: {len(k_tokens)} tokens, {len(k_props)} renamed properties")
    if extra_tokens:
        print("in the schema, not in the SDK (harmless):", " ".join(extra_tokens))
    if missing_tokens:
        print("MISSING tokens:", " ".join(missing_tokens))
    if missing_props:
        print("MISSING properties:", " ".join(missing_props))
    return 1 if missing_tokens or missing_props else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
