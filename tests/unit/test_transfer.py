"""rgrid.transfer: where outputs may land, checksums, and packing inputs before upload."""
import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from rgrid.transfer import TransferError, checksum, prepare, safe_target


def _tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> file bytes (None for folders), following nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            full = os.path.join(dirpath, f)
            out[os.path.relpath(full, root)] = Path(full).read_bytes()
    return out


# ------------------------------------------------------------------ safe_target

def test_safe_target_inside_root_is_allowed_and_creates_nothing(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    target = safe_target(root, "sub/dir/b.txt")
    assert target == root.resolve() / "sub" / "dir" / "b.txt"
    assert not (root / "sub").exists()
    assert list(root.iterdir()) == []
    assert safe_target(root, "a.txt") == root.resolve() / "a.txt"


def test_safe_target_on_a_root_that_does_not_exist_yet_creates_nothing(tmp_path):
    root = tmp_path / "later"
    assert safe_target(root, "x.txt") == root.resolve() / "x.txt"
    assert not root.exists()


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "a/../b", "./a", "", "a//b", "a\x00", "..", "."])
def test_safe_target_refuses_escaping_names_with_a_sentence(tmp_path, rel):
    with pytest.raises(TransferError) as info:
        safe_target(tmp_path, rel)
    assert str(info.value).startswith("Refusing output name")
    assert str(info.value).endswith(".")


def test_safe_target_refuses_a_path_through_a_symlink_leaving_root(tmp_path):
    root = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(TransferError, match="escapes the output folder"):
        safe_target(root, "link/x.txt")
    assert list(elsewhere.iterdir()) == []


def test_safe_target_refuses_a_file_symlink_leaving_root(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    (root / "f.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(TransferError):
        safe_target(root, "f.txt")


def test_safe_target_allows_a_symlink_that_stays_inside_root(tmp_path):
    root = tmp_path / "out"
    (root / "real").mkdir(parents=True)
    (root / "link").symlink_to(root / "real", target_is_directory=True)
    assert safe_target(root, "link/x.txt") == root.resolve() / "real" / "x.txt"


# ------------------------------------------------------------------ checksum

@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 1024 * 1024 * 2 + 17])
def test_checksum_matches_hashlib(tmp_path, size):
    data = os.urandom(size)
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    assert checksum(f) == (size, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())


# ------------------------------------------------------------------ prepare

def _make_folder(root: Path) -> Path:
    src = root / "dir"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_text("top\n")
    (src / "sub" / "data.bin").write_bytes(os.urandom(5000))
    (src / "sub" / "deeper" / "ünï code.txt").write_text("deep")
    (src / ".hidden").write_text("h")
    return src


def test_prepare_file_checksums_the_file_itself(tmp_path):
    f = tmp_path / "data.csv"
    f.write_bytes(b"a,b\n1,2\n")
    item = prepare("data.csv", f, tmp_path)
    assert item.kind == "file"
    assert item.upload_path == f
    assert (item.size, item.sha256, item.md5) == checksum(f)
    assert item.spec() == dict(name="data.csv", kind="file", size=8, sha256=item.sha256, md5=item.md5)


def test_prepare_folder_makes_a_tar_that_extracts_to_the_same_tree(tmp_path):
    src = _make_folder(tmp_path)
    work = tmp_path / "tmp"
    work.mkdir()
    item = prepare("dir", src, work)
    assert item.kind == "dir"
    assert item.upload_path.parent == work and item.upload_path.exists()
    assert (item.size, item.sha256, item.md5) == checksum(item.upload_path)
    dest = tmp_path / "extracted"
    dest.mkdir()
    with tarfile.open(item.upload_path) as tar:
        tar.extractall(dest, filter="data")
    assert _tree(dest) == _tree(src)
    assert "sub/deeper/ünï code.txt" in _tree(dest)


def test_prepare_folder_given_through_a_symlink_sends_its_contents(tmp_path):
    src = _make_folder(tmp_path)
    link = tmp_path / "linked"
    link.symlink_to(src, target_is_directory=True)
    work = tmp_path / "tmp"
    work.mkdir()
    item = prepare("linked", link, work)
    dest = tmp_path / "extracted"
    dest.mkdir()
    with tarfile.open(item.upload_path) as tar:
        tar.extractall(dest, filter="data")
    assert _tree(dest) == _tree(src)


def test_prepare_of_a_missing_path_raises_a_sentence(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(TransferError) as info:
        prepare("nope.csv", missing, tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"Cannot read {missing}:")
    assert "No such file or directory" in msg
    assert msg.endswith("Nothing was queued.")


def test_prepare_of_a_path_the_kernel_refuses_to_read_raises_a_sentence(tmp_path):
    # /proc/self/mem cannot be read at offset 0, even by root: a real unreadable path.
    with pytest.raises(TransferError) as info:
        prepare("mem", Path("/proc/self/mem"), tmp_path)
    assert str(info.value).startswith("Cannot read /proc/self/mem:")
    assert str(info.value).endswith("Nothing was queued.")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the /proc test covers root")
def test_prepare_of_a_file_without_read_permission_raises_a_sentence(tmp_path):
    f = tmp_path / "locked.csv"
    f.write_text("x")
    f.chmod(0)
    try:
        with pytest.raises(TransferError, match="Permission denied"):
            prepare("locked.csv", f, tmp_path)
    finally:
        f.chmod(0o600)
