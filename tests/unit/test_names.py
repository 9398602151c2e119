"""rgrid_core.names: the rules every file name crossing the wire must obey."""
import pytest

from rgrid_core.names import MAX_NAME, dedupe, input_name_problem, output_path_problem


@pytest.mark.parametrize("name", [
    "data.csv", "my file.txt", ".hidden", "ünïcode.txt", "a", "x" * MAX_NAME, "archive.tar.gz",
    "-starts-with-dash", "..dots", "...", "名前.csv",
])
def test_ordinary_input_names_are_accepted(name):
    assert input_name_problem(name) is None


@pytest.mark.parametrize("name", [
    "", ".", "..", "a/b", "/abs", "a\\b", "a\x00b", "tab\there", "new\nline", "cr\rx", "esc\x1b[31m",
    "bell\x07", "del\x7fx", "c1\x9bx",
    "x" * (MAX_NAME + 1),
    "é" * 128,  # 128 characters but 256 bytes in UTF-8
])
def test_dangerous_input_names_are_refused_with_a_reason(name):
    problem = input_name_problem(name)
    assert isinstance(problem, str) and problem


def test_input_name_length_is_counted_in_bytes_not_characters():
    assert input_name_problem("é" * 127) is None  # 254 bytes
    assert "255" in input_name_problem("é" * 128)


def test_non_string_input_name_is_refused():
    assert input_name_problem(None) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["a.txt", "sub/dir/b.txt", ".hidden", "a..b", "dir/.config", "ü/é.txt"])
def test_ordinary_output_paths_are_accepted(path):
    assert output_path_problem(path) is None


@pytest.mark.parametrize("path", [
    "/abs", "../x", "a/../b", "a//b", "./a", "", "a\x00", "a/", "a/.", "..", ".", "a\\b", "x/" + "y" * 2000,
])
def test_escaping_or_odd_output_paths_are_refused(path):
    problem = output_path_problem(path)
    assert isinstance(problem, str) and problem


def test_dedupe_leaves_a_free_name_alone():
    assert dedupe("data.csv", set()) == "data.csv"
    assert dedupe("data.csv", {"other.csv"}) == "data.csv"


def test_dedupe_counts_up_before_the_extension():
    taken = {"data.csv"}
    second = dedupe("data.csv", taken)
    assert second == "data-2.csv"
    taken.add(second)
    assert dedupe("data.csv", taken) == "data-3.csv"
    taken.add("data-3.csv")
    assert dedupe("data.csv", taken) == "data-4.csv"


def test_dedupe_keeps_multi_part_extensions():
    assert dedupe("archive.tar.gz", {"archive.tar.gz"}) == "archive-2.tar.gz"


def test_dedupe_of_a_dotfile_does_not_produce_an_empty_stem():
    assert dedupe(".bashrc", {".bashrc"}) == ".bashrc-2"
    assert dedupe(".bashrc", {".bashrc", ".bashrc-2"}) == ".bashrc-3"


def test_dedupe_without_extension():
    assert dedupe("Makefile", {"Makefile"}) == "Makefile-2"


def test_dedupe_results_are_valid_input_names():
    taken = set()
    for name in ["data.csv", "data.csv", "data.csv", ".bashrc", ".bashrc", "x", "x"]:
        new = dedupe(name, taken)
        assert new not in taken
        assert input_name_problem(new) is None
        taken.add(new)
    assert len(taken) == 7
