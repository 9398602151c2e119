"""rgrid_runner.staging: which files in /work count as outputs."""
import os
from pathlib import Path

from rgrid_runner.staging import changed_files, snapshot


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _populate(work: Path) -> None:
    (work / "data.csv").write_text("a,b\n1,2\n")
    (work / "script.py").write_text("print(1)\n")
    (work / "dir" / "sub").mkdir(parents=True)
    (work / "dir" / "sub" / "input.txt").write_text("in")


def test_snapshot_lists_regular_files_with_size_and_mtime(tmp_path):
    _populate(tmp_path)
    snap = snapshot(tmp_path)
    assert set(snap) == {"data.csv", "script.py", "dir/sub/input.txt"}
    st = (tmp_path / "data.csv").stat()
    assert snap["data.csv"] == (st.st_size, st.st_mtime_ns)


def test_nothing_changed_means_no_outputs(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    assert changed_files(tmp_path, before) == []


def test_new_changed_and_nested_files_are_outputs_and_unchanged_ones_are_not(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / "result.json").write_text("{}")  # new
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")  # changed, different size
    (tmp_path / "script.py").write_text("print(2)\n")  # changed, same size ...
    _bump_mtime(tmp_path / "script.py")  # ... told apart by its mtime
    (tmp_path / "dir" / "sub" / "new.txt").write_text("n")  # new, in a sub-folder
    (tmp_path / "fresh" / "deep").mkdir(parents=True)
    (tmp_path / "fresh" / "deep" / "x.bin").write_bytes(b"\xff")  # new, in a new sub-folder
    (tmp_path / "emptydir").mkdir()  # folders alone are not outputs
    assert changed_files(tmp_path, before) == sorted([
        "result.json", "data.csv", "script.py", "dir/sub/new.txt", "fresh/deep/x.bin",
    ])


def test_an_untouched_input_in_a_sub_folder_is_not_an_output(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / "dir" / "sub" / "input.txt").read_text()  # reading changes nothing
    assert changed_files(tmp_path, before) == []


def test_symlinks_are_never_outputs(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "dir" / "shadow-link").symlink_to("/etc/shadow")
    (tmp_path / "dangling").symlink_to(tmp_path / "does-not-exist")
    (tmp_path / "self-link.csv").symlink_to(tmp_path / "data.csv")
    (tmp_path / "etc-dir").symlink_to("/etc", target_is_directory=True)  # never walked into
    (tmp_path / "real.txt").write_text("real output")
    changed = changed_files(tmp_path, before)
    assert changed == ["real.txt"]
    assert "passwd" not in snapshot(tmp_path)
    assert not any(p.startswith("etc-dir") for p in snapshot(tmp_path))


def test_a_file_replaced_by_a_symlink_is_not_an_output(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / "data.csv").unlink()
    (tmp_path / "data.csv").symlink_to("/etc/passwd")
    assert changed_files(tmp_path, before) == []


def test_fifos_are_not_outputs(tmp_path):
    before = snapshot(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    assert changed_files(tmp_path, before) == []


def test_deleted_files_are_not_outputs(tmp_path):
    _populate(tmp_path)
    before = snapshot(tmp_path)
    (tmp_path / "data.csv").unlink()
    assert changed_files(tmp_path, before) == []
