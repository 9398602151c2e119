"""rgrid.cli.run helpers: which arguments travel as inputs, --env parsing; and the exit codes of a run."""
import os
from pathlib import Path

import click
import pytest
import typer

from rgrid.cli.follow import exit_code_for
from rgrid.cli.run import collect_inputs, parse_env
from rgrid_core.constants import EXIT_CANCELED, EXIT_TIMED_OUT

EXITS = (typer.Exit, click.exceptions.Exit)


def _code(exc) -> int:
    return getattr(exc, "exit_code", getattr(exc, "code", None))


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "script.py").write_text("print('hi')\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "data.csv").write_text("a\n")
    (tmp_path / "b" / "data.csv").write_text("b\n")
    (tmp_path / "notes.txt").write_text("n\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner.txt").write_text("i\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_files_and_folders_become_inputs_and_arguments_are_rewritten(project):
    script, rewritten, inputs = collect_inputs(
        "script.py", ["a/data.csv", "b/data.csv", "a/data.csv", "--flag", "not-a-file", "dir", "x y"]
    )
    assert script == "script.py"
    assert rewritten == [
        "/work/data.csv", "/work/data-2.csv", "/work/data.csv", "--flag", "not-a-file", "/work/dir", "x y",
    ]
    assert [name for name, _ in inputs] == ["script.py", "data.csv", "data-2.csv", "dir"]
    sources = {name: Path(src).resolve() for name, src in inputs}
    assert sources["data.csv"] == project / "a" / "data.csv"
    assert sources["data-2.csv"] == project / "b" / "data.csv"
    assert sources["dir"] == project / "dir"


def test_the_same_file_named_differently_is_one_input(project):
    _, rewritten, inputs = collect_inputs(
        "script.py", ["notes.txt", "./notes.txt", str(project / "notes.txt"), "a/../notes.txt"]
    )
    assert rewritten == ["/work/notes.txt"] * 4
    assert [name for name, _ in inputs] == ["script.py", "notes.txt"]


def test_the_script_named_again_as_an_argument_is_not_sent_twice(project):
    _, rewritten, inputs = collect_inputs("script.py", ["script.py"])
    assert rewritten == ["/work/script.py"]
    assert len(inputs) == 1


def test_an_input_named_like_the_script_is_deduplicated(project):
    (project / "a" / "script.py").write_text("other")
    _, rewritten, inputs = collect_inputs("script.py", ["a/script.py"])
    assert rewritten == ["/work/script-2.py"]
    assert [n for n, _ in inputs] == ["script.py", "script-2.py"]


def test_empty_and_option_like_arguments_pass_through(project):
    _, rewritten, inputs = collect_inputs("script.py", ["", "-v", "--out=notes.txt", "42"])
    assert rewritten == ["", "-v", "--out=notes.txt", "42"]
    assert len(inputs) == 1


def test_script_in_a_subfolder_is_sent_by_its_name(project):
    (project / "tools").mkdir()
    (project / "tools" / "run.py").write_text("")
    script, _, inputs = collect_inputs("tools/run.py", [])
    assert script == "run.py"
    assert inputs[0][0] == "run.py"


def test_a_symlinked_input_keeps_the_name_the_user_gave(project):
    (project / "blob-5f3a").write_text("x,y\n")
    (project / "table.csv").symlink_to(project / "blob-5f3a")
    _, rewritten, inputs = collect_inputs("script.py", ["table.csv"])
    assert rewritten == ["/work/table.csv"]
    assert [n for n, _ in inputs] == ["script.py", "table.csv"]


def test_missing_script_exits_with_an_error(project, capsys):
    with pytest.raises(EXITS) as info:
        collect_inputs("nope.py", ["notes.txt"])
    assert _code(info.value) == 1


def test_a_folder_as_script_exits_with_an_error(project):
    with pytest.raises(EXITS):
        collect_inputs("dir", [])


def test_an_input_whose_name_cannot_travel_exits_with_an_error(project):
    (project / "bad\\name.txt").write_text("x")
    with pytest.raises(EXITS) as info:
        collect_inputs("script.py", ["bad\\name.txt"])
    assert _code(info.value) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file, so 'unreadable' cannot be set up")
def test_an_unreadable_input_exits_with_an_error(project):
    (project / "notes.txt").chmod(0)
    try:
        with pytest.raises(EXITS):
            collect_inputs("script.py", ["notes.txt"])
    finally:
        (project / "notes.txt").chmod(0o644)


# ------------------------------------------------------------------ parse_env

def test_parse_env_splits_on_the_first_equals_sign():
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}


def test_parse_env_allows_empty_values_and_spaces():
    assert parse_env(["EMPTY=", "S=a b"]) == {"EMPTY": "", "S": "a b"}
    assert parse_env([]) == {}


def test_parse_env_later_value_wins():
    assert parse_env(["A=1", "A=2"]) == {"A": "2"}


@pytest.mark.parametrize("pair", ["NOVALUE", "=x", ""])
def test_parse_env_rejects_malformed_pairs(pair):
    with pytest.raises(EXITS) as info:
        parse_env([pair])
    assert _code(info.value) == 1


# ------------------------------------------------------------------ exit_code_for

@pytest.mark.parametrize("ex, code", [
    ({"status": "succeeded", "exit_code": 0}, 0),
    ({"status": "failed", "exit_code": 3}, 3),
    ({"status": "failed", "exit_code": 137}, 137),
    ({"status": "failed", "exit_code": None}, 1),
    ({"status": "failed", "exit_code": 0}, 1),
    ({"status": "failed"}, 1),
    ({"status": "timed_out", "exit_code": None}, EXIT_TIMED_OUT),
    ({"status": "canceled", "exit_code": None}, EXIT_CANCELED),
    ({"status": "lost", "exit_code": None}, 1),
    ({"status": "queued"}, 1),
    ({"status": "running"}, 1),
])
def test_exit_code_for_each_status(ex, code):
    assert exit_code_for(ex) == code


def test_timeout_and_cancel_codes_follow_shell_conventions():
    assert EXIT_TIMED_OUT == 124  # like coreutils `timeout`
    assert EXIT_CANCELED == 130  # 128 + SIGINT
