"""Downloading an execution's outputs, each checked against its sha256."""
from __future__ import annotations

from pathlib import Path

from .connect import call
from .output import err, note, warn

BAR_FROM = 1024 * 1024  # bytes: smaller downloads show no progress bar


def fetch_outputs(c, execution_id: str, target: Path, quiet: bool, failures: list | None = None) -> int:
    """Download every output under target; returns how many there were. Each output that could
    not be fetched safely is reported and appended to `failures`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from ..transfer import TransferError, download, safe_target

    failures = failures if failures is not None else []
    outputs = call(c.get, f"/v1/executions/{execution_id}/outputs")
    if not outputs:
        return 0
    total = sum(o["size"] for o in outputs)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err,
                  transient=True, disable=quiet or total < BAR_FROM) as bar:
        task = bar.add_task(f"Downloading {len(outputs)} output(s)", total=total)
        for o in outputs:
            try:
                dest = safe_target(target, o["path"])
                download(o["url"], dest, o["sha256"], progress=lambda n: bar.advance(task, n))
            except TransferError as e:
                failures.append((execution_id, o["path"], str(e)))
                warn(str(e))
    if not quiet:
        note(f"{len(outputs)} output file(s) in {target}/")
    return len(outputs)
