"""What `--requirements` accepts: package names, extras, version specifiers and markers, one a line.

A requirements file may also carry pip's own options (`-r URL`, `-e path`, `--index-url`,
`--no-binary`, `name @ https://…`), and several of them make pip fetch anything or run a
package's build code. So the CLI (before uploading), the API and the worker all accept only lines
that parse as a PEP 508 requirement without a URL, and the layer is keyed by the normalised text:
two files listing the same packages share one layer whatever their comments, order or spelling.
"""
from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .runtimes import CATALOGUE

ONLY_PACKAGES = ("--requirements takes package names and versions only (such as `numpy==1.26.4` or "
                 "`pandas>=2; python_version >= \"3.10\"`); -r, -c, -e, --index-url, other pip options, "
                 "paths and URLs are not supported")
# What pip would read as a local archive rather than a package name.
ARCHIVE_ENDINGS = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz")
COMMENT = re.compile(r"(^|\s)#.*$")  # pip's rule: `#` at the start or after whitespace


def python_runtimes() -> list[str]:
    return [name for name, runtime in CATALOGUE.items() if runtime.command[0] == "python3"]


def runtime_problem(runtime: str) -> str | None:
    """Why this runtime cannot take a requirements file (a sentence), or None."""
    if runtime in CATALOGUE and CATALOGUE[runtime].command[0] != "python3":
        return (f"--requirements installs Python packages, and runtime {runtime} has no Python; "
                f"use it with one of {', '.join(python_runtimes())}.")
    return None


def _lines(text: str):
    """(line number, requirement text) of every line that is not blank or a comment."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = COMMENT.sub("", raw).strip()
        if line:
            yield number, line


def _parse(line: str) -> Requirement | None:
    if line.startswith("-") or line.endswith("\\") or "/" in line or "\\" in line or "$" in line:
        return None
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return None
    if requirement.url or requirement.name.lower().endswith(ARCHIVE_ENDINGS):
        return None
    return requirement


def problem(text: str) -> str | None:
    """Why this requirements text cannot be built (a sentence naming the first bad line), or None."""
    if "\x00" in text:
        return "The requirements file contains a NUL character; save it as plain UTF-8 text and try again."
    for number, line in _lines(text):
        if _parse(line) is None:
            shown = line if len(line) <= 60 else line[:57] + "..."
            return f"Line {number} of the requirements file ({shown!r}) is not a package: {ONLY_PACKAGES}."
    return None


def _normal(requirement: Requirement) -> str:
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{canonicalize_name(requirement.name)}{extras}{requirement.specifier}{marker}"


def normalised(text: str) -> str:
    """The packages of a valid requirements text, one canonical line each, sorted, without
    comments or duplicates ("" when it lists none): what is hashed, stored and installed."""
    if problem(text):
        raise ValueError(problem(text))
    lines = sorted({_normal(_parse(line)) for _, line in _lines(text)})
    return "".join(f"{line}\n" for line in lines)
