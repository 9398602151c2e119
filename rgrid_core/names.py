"""Rules for file names that cross the wire. Names are data, never paths to trust."""
from __future__ import annotations

import posixpath
import re

MAX_NAME = 255
MAX_PATH = 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")
# The rule below as JSON Schema says it, for the API's OpenAPI (which counts characters; the rule
# counts bytes in UTF-8): input_name_problem still decides, and says why in a sentence.
INPUT_NAME_SCHEMA = {"minLength": 1, "maxLength": MAX_NAME, "pattern": r"^[^\x00-\x1f\x7f-\x9f/\\]+$",
                     "not": {"enum": [".", ".."]}}


def input_name_problem(name: str) -> str | None:
    """Why `name` cannot be an input file name in /work, or None when it is fine."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if len(name.encode()) > MAX_NAME:
        return f"is longer than {MAX_NAME} bytes"
    if name in (".", ".."):
        return "is a relative path component"
    if _BAD_CHARS.search(name):
        return "contains '/', '\\', NUL or a control character"
    return None


def output_path_problem(path: str) -> str | None:
    """Why a relative output path could escape its folder, or None when it is fine."""
    if not path or len(path.encode()) > MAX_PATH:
        return "is empty or too long"
    if "\x00" in path or "\\" in path:
        return "contains NUL or a backslash"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "contains an empty, '.' or '..' component"
    if posixpath.normpath(path) != path:
        return "is not normalised"
    return None


def dedupe(name: str, taken: set[str]) -> str:
    """`data.csv`, then `data-2.csv`, `data-3.csv`… so that no input silently overwrites another."""
    if name not in taken:
        return name
    stem, dot, ext = name.partition(".") if not name.startswith(".") else (name, "", "")
    n = 2
    while True:
        candidate = f"{stem}-{n}{dot}{ext}"
        if candidate not in taken:
            return candidate
        n += 1
