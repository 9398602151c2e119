"""`rgrid run`: collect the inputs, upload what the grid lacks, queue, follow, download."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from rgrid_core.names import dedupe, input_name_problem
from rgrid_core.constants import REQUIREMENTS_MAX_CHARS
from rgrid_core.requirements import problem as requirements_problem, runtime_problem
from rgrid_core.runtimes import DEFAULT_RUNTIME, SUPPORTED_RUNTIMES
from rgrid_core.states import WITH_OUTPUTS

from . import connect
from .connect import call
from .fetch import fetch_outputs
from .follow import CANCEL_TIMEOUT, cancel_or_detach, exit_code_for, follow
from .output import fail, note, out, warn

MAX_PARALLEL = 10000
BAR_FROM = 1024 * 1024  # bytes: smaller uploads show no progress bar

RUN_HELP = "\n\n".join([
    "Run SCRIPT with ARGS on the grid, as `python SCRIPT ARGS` would run locally.",
    "rgrid's own options, --batch and --parallel included, go before SCRIPT; everything after SCRIPT goes "
    "to the script, as with `docker run`: in `rgrid run --timeout 600 process.py --timeout 5` the script gets "
    "`--timeout 5`. When the script's first arguments are options of `rgrid run`, they still go to the script "
    "and rgrid says so on stderr; a first script argument `--` is dropped and silences that. A --batch there is "
    "refused, as it is almost surely meant for rgrid: write `rgrid run --batch 'data/*.csv' process.py`, or "
    "`rgrid run tool.py -- --batch x` to hand it to the script.",
    "A batch (--batch GLOB) runs SCRIPT once per match of GLOB (quote it; rgrid expands it, sorted, `**` "
    "recurses), with the matched file as the first argument followed by ARGS. It shows one progress line "
    "(queued/running/done/failed) instead of the scripts' output, downloads each execution's outputs into "
    "OUTPUT_DIR/<input name without extension>/ (default ./rgrid-outputs/<batch id>), and exits 1 listing "
    "the executions that did not succeed. `rgrid status --batch ID` and `rgrid list --batch ID` show it "
    "later; `rgrid cancel ID` cancels what has not finished.",
])


def collect_inputs(script: str, args: list[str]) -> tuple[str, list[str], list[tuple[str, Path]]]:
    """Decide which arguments are local files/folders; returns (script name, rewritten args, inputs)."""
    script_path = Path(script)
    if not script_path.is_file():
        fail(f"Script {script!r} not found. Check the path (it is relative to {os.getcwd()}).")
    if not os.access(script_path, os.R_OK):
        fail(f"Script {script!r} is not readable; check its permissions.")
    by_source: dict[Path, str] = {}
    inputs: list[tuple[str, Path]] = []
    taken: set[str] = set()

    def add(path: Path) -> str:
        key = path.resolve()
        if key in by_source:
            return by_source[key]
        base = Path(os.path.abspath(path)).name  # the name the user gave, even for a symlink
        if input_name_problem(base):
            fail(f"Cannot send {str(path)!r}: its name {input_name_problem(base)}.")
        name = dedupe(base, taken)
        taken.add(name)
        by_source[key] = name
        inputs.append((name, path))
        return name

    script_name = add(script_path)
    rewritten = []
    for arg in args:
        if arg and os.path.exists(arg):
            path = Path(arg)
            if not os.access(path, os.R_OK):
                fail(f"Input {arg!r} is not readable; check its permissions. Nothing was queued.")
            rewritten.append(f"/work/{add(path)}")
        else:
            rewritten.append(arg)
    return script_name, rewritten, inputs


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair.split('=')[0]!r} must look like KEY=VALUE.")
        env[key] = value
    return env


def rgrid_options(command) -> dict[str, bool]:
    """Every option name of a click command (but --help) -> whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            for name in [*param.opts, *param.secondary_opts]:
                names[name] = not param.is_flag
    names.pop("--help", None)
    return names


def script_arguments(args: list[str], options: dict[str, bool]) -> list[str]:
    """The script's arguments: everything after SCRIPT (as with `docker run`). A first `--` is
    dropped. When the first arguments are rgrid options they stay the script's, with a hint on
    stderr; a --batch among them is refused (exit 1), as it is almost surely meant for rgrid."""
    if args[:1] == ["--"]:
        return args[1:]
    leading, i = [], 0
    while i < len(args):
        arg = args[i]
        name = arg.partition("=")[0] if arg.startswith("--") else arg
        if name not in options:
            break
        leading.append(name)
        i += 2 if options[name] and "=" not in arg else 1
    shown = ", ".join(f"`{n}`" for n in dict.fromkeys(leading))
    if "--batch" in leading:
        fail("`--batch` after the script would go to the script, so nothing was queued. Put rgrid's options "
             "before the script (`rgrid run --batch 'data/*.csv' process.py`), or `--` before it to hand it "
             "to the script.")
    if leading:
        warn(f"{shown} after the script {'goes' if len(leading) == 1 else 'go'} to the script; put rgrid's "
             "options before the script, or `--` to silence this.")
    return args


def read_requirements(path: Path) -> str:
    """The text of a requirements file, or a sentence saying why it cannot be read."""
    if not path.is_file():
        fail(f"The requirements file {path} does not exist; give the path of a requirements.txt.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"The requirements file {path} could not be read as UTF-8 text ({e}); save it as UTF-8 and try again.")
    if len(text) > REQUIREMENTS_MAX_CHARS:
        fail(f"The requirements file {path} is over {REQUIREMENTS_MAX_CHARS // 1024} KiB; list only the packages "
             "the script imports.")
    problem = requirements_problem(text)
    if problem:
        fail(f"{path}: {problem}")
    return text


def submit(c, script: str, args: list[str], env: dict[str, str], runtime: str, timeout: Optional[int],
           requirements: Optional[str] = None) -> dict:
    """Upload every input the grid does not already hold (by content), then queue the execution.
    Nothing is queued if any upload fails."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from ..transfer import TransferError, prepare, send
    from .output import err

    script_name, rewritten, inputs = collect_inputs(script, args)
    with tempfile.TemporaryDirectory(prefix="rgrid-") as tmp:
        try:
            prepared = [prepare(name, src, Path(tmp)) for name, src in inputs]
        except TransferError as e:
            fail(str(e))
        created = call(c.post, "/v1/executions", json=dict(
            script=script_name, args=rewritten, env=env, runtime=runtime, requirements=requirements,
            timeout_seconds=timeout,
            inputs=[p.spec() for p in prepared], submit=True,
        ))
        if created["status"] == "queued":
            return created  # every input was already on the grid (same content): nothing to upload
        urls = {u["name"]: u for u in created["uploads"]}
        prepared = [p for p in prepared if p.name in urls]
        total = sum(p.size for p in prepared)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True, disable=total < BAR_FROM) as bar:
            task = bar.add_task(f"Uploading {len(prepared)} file(s)", total=total)
            for item in prepared:
                try:
                    send(urls[item.name], item, progress=lambda n: bar.advance(task, n))
                except KeyboardInterrupt:
                    call(c.post, f"/v1/executions/{created['id']}/cancel")
                    fail("Interrupted during the upload; nothing was queued.", 130)
                except Exception as e:  # noqa: BLE001 - any failed upload: queue nothing, say which
                    call(c.post, f"/v1/executions/{created['id']}/cancel")
                    fail(f"Upload of {item.source} failed ({e}). Nothing was queued; try again.")
    return call(c.post, f"/v1/executions/{created['id']}/submit")


def run(
    ctx: typer.Context,
    script: str = typer.Argument(..., help="The Python script to run."),
    args: Optional[list[str]] = typer.Argument(None, help="Arguments for the script; existing files are uploaded."),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the script's environment (repeatable)."),
    runtime: str = typer.Option(DEFAULT_RUNTIME, "--runtime", help=f"One of: {', '.join(SUPPORTED_RUNTIMES)}."),
    requirements_file: Optional[Path] = typer.Option(
        None, "--requirements", metavar="FILE",
        help="A requirements.txt: the worker installs its packages (wheels from PyPI) on the runtime, once per "
             "runtime and file for the whole fleet."),
    timeout: Optional[int] = typer.Option(None, "--timeout", help="Wall-clock limit in seconds (per execution)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the execution (or batch) id and return at once."),
    output_dir: Optional[Path] = typer.Option(
        None, "--output-dir",
        help="Where outputs go (default ./rgrid-outputs/<id>; for a batch, one folder per input inside it)."),
    no_download: bool = typer.Option(False, "--no-download", help="Leave outputs in the grid (rgrid download ID)."),
    batch: Optional[str] = typer.Option(
        None, "--batch", metavar="GLOB",
        help="Run SCRIPT once per file matching GLOB (quoted; ** recurses), the file being its first argument."),
    parallel: Optional[int] = typer.Option(
        None, "--parallel", metavar="N", min=1, max=MAX_PARALLEL,
        help="With --batch: at most N executions of the batch run at once."),
):
    if script.startswith("-") and not os.path.exists(script):
        fail(f"`rgrid run` has no option {script.partition('=')[0]!r}; `rgrid run --help` lists them.")
    if runtime not in SUPPORTED_RUNTIMES:
        fail(f"Unknown runtime {runtime!r}. Valid runtimes: {', '.join(SUPPORTED_RUNTIMES)}.")
    env_vars = parse_env(env)
    if requirements_file is not None and runtime_problem(runtime):
        fail(runtime_problem(runtime))
    requirements = read_requirements(requirements_file) if requirements_file is not None else None
    raw = list(args or [])
    if batch is not None:
        from .batch import check_pattern

        check_pattern(batch, script, raw)
    script_args = script_arguments(raw, rgrid_options(ctx.command))
    if parallel is not None and batch is None:
        fail("--parallel limits a batch: add --batch GLOB (for example --batch 'data/*.csv').")
    if batch is not None:
        from .batch import run_batch

        run_batch(script, batch, parallel, script_args, env_vars, runtime, timeout,
                  detach=detach, output_dir=output_dir, no_download=no_download, requirements=requirements)
        return
    c = connect.client(start_local=True)
    ex = submit(c, script, script_args, env_vars, runtime, timeout, requirements)
    ex_id = ex["id"]
    if detach:
        out.print(ex_id, highlight=False)
        return
    note(f"Execution {ex_id} queued.")

    def cancel() -> str:
        c.post(f"/v1/executions/{ex_id}/cancel", timeout=CANCEL_TIMEOUT)
        return f"Canceled {ex_id}."

    final = follow(c, ex_id, on_interrupt=lambda: cancel_or_detach(
        "Cancel the execution (c) or detach and leave it running (d)?", cancel,
        f"Detached. Follow it again with `rgrid logs -f {ex_id}`.",
        f"{ex_id} may still run: cancel it with `rgrid cancel {ex_id}`."), show_waiting=True)
    failures: list = []
    if not no_download and final["status"] in WITH_OUTPUTS:
        fetch_outputs(c, ex_id, output_dir or Path("rgrid-outputs") / ex_id, quiet=False, failures=failures)
    code = exit_code_for(final)
    if failures and code == 0:
        fail(f"{len(failures)} output file(s) could not be downloaded; try `rgrid download {ex_id}`.")
    raise typer.Exit(code)
