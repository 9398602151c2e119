"""`rgrid run`'s argument rule (everything after SCRIPT is the script's, as with `docker run`) and
the refusal of a --batch pattern that the shell has already expanded. Nothing is queued when a
rule refuses: the API is never reached."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from rgrid.cli import app, connect, run
from rgrid.cli.batch import check_pattern, output_folders


def text(s: str) -> str:
    return " ".join(s.split())


OPTIONS = {"--env": True, "-e": True, "--runtime": True, "--requirements": True, "--timeout": True, "--detach": False, "-d": False,
           "--output-dir": True, "--no-download": False, "--batch": True, "--parallel": True}


def test_the_options_come_from_the_run_command_itself():
    from typer.main import get_command

    assert run.rgrid_options(get_command(app).commands["run"]) == OPTIONS


@pytest.mark.parametrize("args, expected, hinted", [
    (["--top", "5"], ["--top", "5"], None),
    ([], [], None),
    (["-d", "x"], ["-d", "x"], "`-d` after the script goes to the script"),
    (["--timeout", "5", "x"], ["--timeout", "5", "x"], "`--timeout` after the script goes"),
    (["--parallel=2", "-e", "A=1", "x"], ["--parallel=2", "-e", "A=1", "x"], "`--parallel`, `-e` after the script go"),
    (["x", "--batch", "g"], ["x", "--batch", "g"], None),  # only the first arguments are looked at
    (["--", "--batch", "g", "-d"], ["--batch", "g", "-d"], None),  # a first `--` is dropped and silences
    (["--top", "--", "x"], ["--top", "--", "x"], None),  # a later one is the script's
    (["--help"], ["--help"], None),  # the script's own help
])
def test_script_arguments(capsys, args, expected, hinted):
    assert run.script_arguments(args, OPTIONS) == expected
    said = text(capsys.readouterr().err)
    if hinted:
        assert hinted in said and "put rgrid's options before the script, or `--` to silence this" in said
    else:
        assert said == ""


@pytest.mark.parametrize("args", [["--batch", "g"], ["--batch=g"], ["-d", "--batch", "g"], ["--parallel", "2", "--batch", "g"]])
def test_a_batch_after_the_script_is_refused(capsys, args):
    with pytest.raises(typer.Exit) as info:
        run.script_arguments(args, OPTIONS)
    assert info.value.exit_code == 1
    said = text(capsys.readouterr().err)
    assert "`--batch` after the script would go to the script, so nothing was queued" in said
    assert "rgrid run --batch 'data/*.csv' process.py" in said


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts").mkdir()
    for n in range(1, 21):
        (tmp_path / "texts" / f"t{n:02}.txt").write_text(str(n))
    (tmp_path / "sum.py").write_text("print(1)\n")
    (tmp_path / "show.py").write_text("print(1)\n")
    return tmp_path


@pytest.fixture
def no_api(monkeypatch):
    def refuse(start_local=False):
        raise AssertionError("the API was reached: something would have been queued")

    monkeypatch.setattr(connect, "client", refuse)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def expanded() -> list[str]:
    return [f"texts/t{n:02}.txt" for n in range(1, 21)]


@pytest.mark.parametrize("argv", [
    ["run", "--batch", *expanded(), "sum.py"],  # rgrid run --batch texts/*.txt sum.py, unquoted
    ["run", "--parallel", "4", "--batch", *expanded(), "sum.py", "--top", "5"],
    ["run", "--batch", *expanded()[:2], "sum.py"],  # two matches
    ["run", "--batch", *expanded(), "--parallel", "2", "sum.py"],
])
def test_a_batch_pattern_the_shell_expanded_is_refused(project, no_api, argv):
    r = invoke(*argv)
    assert r.exit_code == 1, r.output
    said = text(r.stderr)
    assert "--batch 'texts/t01.txt' has no wildcard but more files follow it" in said
    assert "nothing was queued" in said and "--batch 'texts/*.txt'" in said


def test_a_batch_after_the_script_is_refused_before_anything_is_queued(project, no_api):
    r = invoke("run", "sum.py", "--batch", *expanded())  # the form
    assert r.exit_code == 1 and "`--batch` after the script would go to the script" in text(r.stderr)
    r = invoke("run", "sum.py", "--batch", "texts/*.txt")
    assert r.exit_code == 1 and "`--batch` after the script would go to the script" in text(r.stderr)


def test_a_single_literal_file_is_still_a_batch_of_one(project, capsys):
    check_pattern("texts/t01.txt", "sum.py", ["--top", "5"])  # no more files follow: allowed
    check_pattern("texts/*.txt", "sum.py", ["texts/t01.txt"])  # a wildcard: the files are the script's
    with pytest.raises(typer.Exit):
        check_pattern(" ", "sum.py", [])


def test_parallel_needs_a_batch(project, no_api):
    r = invoke("run", "--parallel", "2", "show.py")
    assert r.exit_code == 1 and "--parallel limits a batch" in text(r.stderr)


def test_an_unknown_option_before_the_script_is_named(project, no_api):
    r = invoke("run", "--bogus", "show.py")
    assert r.exit_code == 1 and "`rgrid run` has no option '--bogus'" in text(r.stderr)


@pytest.fixture
def submitted(project, monkeypatch):
    """Run in detached mode with submit() faked: returns what the script would have been given."""
    seen = {}

    def submit(c, script, args, env, runtime, timeout, requirements=None):
        seen.update(script=script, args=args, env=env, timeout=timeout)
        if requirements is not None:
            seen["requirements"] = requirements
        return {"id": "ex-000000000001", "status": "queued"}

    monkeypatch.setattr(connect, "client", lambda start_local=False: object())
    monkeypatch.setattr(run, "submit", submit)
    return seen


def test_options_after_the_script_go_to_the_script_with_a_hint(submitted):
    r = invoke("run", "-d", "--timeout", "60", "-e", "A=1", "show.py", "--timeout", "5", "-e", "B=2")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "ex-000000000001"
    assert submitted == {"script": "show.py", "args": ["--timeout", "5", "-e", "B=2"], "env": {"A": "1"}, "timeout": 60}
    assert "`--timeout`, `-e` after the script go to the script" in text(r.stderr)


def test_a_double_dash_hands_everything_after_it_to_the_script_silently(submitted):
    r = invoke("run", "--detach", "show.py", "--", "--batch", "x", "-d")
    assert r.exit_code == 0, r.output
    assert submitted["args"] == ["--batch", "x", "-d"] and r.stderr == ""


def test_output_folders_are_stems_deduplicated():
    assert output_folders(["a/data.csv", "b/data.csv", "c/data.txt", "d/x.tar.gz"]) == {
        "a/data.csv": "data", "b/data.csv": "data-2", "c/data.txt": "data-3", "d/x.tar.gz": "x.tar",
    }
