"""rgrid_runner.inputcache and its use by staging.stage_inputs: inputs kept on the worker by sha256.

The real object store and its presigned URLs are exercised by tests/integration (and the client's
download by test_workerclient); CountingStore below only keeps objects in memory, checks the sha256
exactly as WorkerClient.download does, and counts fetches per key.
"""
import hashlib
import io
import os
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest

from rgrid_runner.inputcache import InputCache
from rgrid_core.workerwire import InputSpec
from rgrid_runner import staging
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import ChecksumMismatch

MB = 1024 * 1024


class CountingStore:
    """Objects in a dict key -> bytes; download_verified keeps the real one's contract."""

    def __init__(self, objects: dict[str, bytes] | None = None):
        self.objects = dict(objects or {})
        self.fetches: Counter = Counter()

    def fetch(self, spec: InputSpec, dest: Path) -> None:
        key = spec.url
        self.fetches[key] += 1
        data = self.objects[key]
        with open(dest, "wb") as f:
            f.write(data)
        got = hashlib.sha256(data).hexdigest()
        if got != spec.sha256:
            raise ChecksumMismatch(f"{spec.name}: expected sha256 {spec.sha256}, got {got}", spec.name)


def stage_inputs(store: CountingStore, execution_id: str, specs: list[dict], workdir: Path, cache) -> int:
    """staging.stage_inputs with the specs a claim would carry (the URL is the store's key here)."""
    inputs = [InputSpec(name=s["name"], kind=s["kind"], sha256=s["sha256"], size=s["size"], url=s["object_key"])
              for s in specs]
    return staging.stage_inputs(store.fetch, inputs, workdir, cache)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_spec(name: str, data: bytes, key: str | None = None) -> dict:
    return dict(name=name, kind="file", size=len(data), sha256=_sha(data), object_key=key or f"blobs/t/{_sha(data)}")


def _store_with(*specs_and_data) -> CountingStore:
    return CountingStore({spec["object_key"]: data for spec, data in specs_and_data})


def _new_workdir(tmp_path: Path, run: str) -> Path:
    """Laid out like the runner: <work_root>/<run>/work."""
    workdir = tmp_path / run / "work"
    workdir.mkdir(parents=True)
    return workdir


def _cache(tmp_path: Path, limit: int = 10 * MB) -> InputCache:
    return InputCache(tmp_path / ".input-cache", limit)


def _entries(cache: InputCache) -> list[str]:
    """Published entries and partial downloads alike (names starting with '.')."""
    return sorted(p.name for p in cache.root.iterdir()) if cache.root.exists() else []


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_same_input_twice_is_fetched_once_and_each_workdir_gets_its_own_copy(tmp_path):
    data = b"a,b\n1,2\n" * 100
    spec = _file_spec("data.csv", data)
    store = _store_with((spec, data))
    cache = _cache(tmp_path)

    first, second, third = (_new_workdir(tmp_path, f"run{i}") for i in range(3))
    assert stage_inputs(store, "ex1", [spec], first, cache) == len(data)
    assert stage_inputs(store, "ex2", [spec], second, cache) == 0  # nothing fetched
    assert store.fetches[spec["object_key"]] == 1
    assert (first / "data.csv").read_bytes() == data
    assert (second / "data.csv").read_bytes() == data

    entry = cache.root / spec["sha256"]
    assert entry.read_bytes() == data
    assert not os.path.samefile(entry, second / "data.csv")
    # A script changing its staged copy must not reach the cache or a later run.
    (second / "data.csv").write_bytes(b"changed by the script")
    with open(first / "data.csv", "r+b") as f:
        f.write(b"XX")  # in place too, in case the copy were a hard link
    assert entry.read_bytes() == data
    stage_inputs(store, "ex3", [spec], third, cache)
    assert (third / "data.csv").read_bytes() == data
    assert store.fetches[spec["object_key"]] == 1


def test_without_a_cache_every_staging_fetches(tmp_path):
    data = b"payload"
    spec = _file_spec("in.txt", data)
    store = _store_with((spec, data))
    for i in range(3):
        workdir = _new_workdir(tmp_path, f"run{i}")
        assert stage_inputs(store, f"ex{i}", [spec], workdir, None) == len(data)
        assert (workdir / "in.txt").read_bytes() == data
    assert store.fetches[spec["object_key"]] == 3
    assert not (tmp_path / ".input-cache").exists()


def test_a_damaged_entry_is_dropped_fetched_again_and_valid_afterwards(tmp_path):
    data = b"the real content\n" * 50
    spec = _file_spec("in.txt", data)
    store = _store_with((spec, data))
    cache = _cache(tmp_path)
    stage_inputs(store, "ex1", [spec], _new_workdir(tmp_path, "run1"), cache)
    entry = cache.root / spec["sha256"]
    entry.write_bytes(b"bit rot" + data[7:])  # same size, wrong bytes

    workdir = _new_workdir(tmp_path, "run2")
    assert stage_inputs(store, "ex2", [spec], workdir, cache) == len(data)
    assert store.fetches[spec["object_key"]] == 2
    assert (workdir / "in.txt").read_bytes() == data
    assert entry.read_bytes() == data
    assert cache.path_if_valid(spec["sha256"]) == entry

    stage_inputs(store, "ex3", [spec], _new_workdir(tmp_path, "run3"), cache)
    assert store.fetches[spec["object_key"]] == 2  # served from the repaired entry


def test_copy_out_of_a_damaged_entry_leaves_no_dest_and_no_entry(tmp_path):
    data = b"x" * 100
    cache = _cache(tmp_path)
    part = cache.new_entry_path(_sha(data))
    part.write_bytes(data)
    entry = cache.add(_sha(data), part)
    entry.write_bytes(b"y" * 100)
    dest = tmp_path / "out"
    assert cache.copy_out(_sha(data), dest) is False
    assert not dest.exists()
    assert not entry.exists()


def test_eviction_removes_the_least_recently_used_and_keeps_a_recently_used_one(tmp_path):
    cache = _cache(tmp_path, limit=100)
    blobs = {name: name.encode() * 25 for name in "abcde"}  # 25 bytes each: a quarter of the limit
    specs = {name: _file_spec(f"{name}.bin", data) for name, data in blobs.items()}
    store = _store_with(*((specs[n], blobs[n]) for n in blobs))

    stage_inputs(store, "ex1", [specs[n] for n in "abcd"], _new_workdir(tmp_path, "run1"), cache)
    assert set(_entries(cache)) == {specs[n]["sha256"] for n in "abcd"}  # exactly at the limit
    old = time.time() - 1000
    for i, n in enumerate("abcd"):  # a oldest ... d newest
        os.utime(cache.root / specs[n]["sha256"], (old + i, old + i))

    # Using a makes it the most recently used, so b is now the oldest.
    workdir = _new_workdir(tmp_path, "run2")
    stage_inputs(store, "ex2", [specs["a"], specs["e"]], workdir, cache)
    assert store.fetches[specs["a"]["object_key"]] == 1
    assert store.fetches[specs["e"]["object_key"]] == 1
    assert set(_entries(cache)) == {specs[n]["sha256"] for n in "acde"}
    assert sum((cache.root / e).stat().st_size for e in _entries(cache)) <= cache.limit
    assert (workdir / "e.bin").read_bytes() == blobs["e"]

    stage_inputs(store, "ex3", [specs["b"]], _new_workdir(tmp_path, "run3"), cache)
    assert store.fetches[specs["b"]["object_key"]] == 2  # evicted, so fetched again


def test_files_bigger_than_a_quarter_of_the_limit_are_not_cached(tmp_path):
    cache = _cache(tmp_path, limit=100)
    data = b"z" * 26
    spec = _file_spec("big.bin", data)
    store = _store_with((spec, data))
    assert cache.worth_caching(25) and not cache.worth_caching(26)
    for i in range(2):
        workdir = _new_workdir(tmp_path, f"run{i}")
        assert stage_inputs(store, f"ex{i}", [spec], workdir, cache) == len(data)
        assert (workdir / "big.bin").read_bytes() == data
        assert _entries(cache) == []
    assert store.fetches[spec["object_key"]] == 2


def test_a_folder_input_is_fetched_once_and_extracted_each_time_without_a_stray_tar(tmp_path):
    files = {"top.txt": b"top\n", "sub/deep.txt": b"deep\n", "sub/more/x.bin": bytes(range(256))}
    archive = _tar_of(files)
    spec = dict(name="data", kind="dir", size=len(archive), sha256=_sha(archive), object_key="blobs/t/dir")
    store = CountingStore({"blobs/t/dir": archive})
    cache = _cache(tmp_path)

    for i in range(2):
        workdir = _new_workdir(tmp_path, f"run{i}")
        stage_inputs(store, f"ex{i}", [spec], workdir, cache)
        for rel, data in files.items():
            assert (workdir / "data" / rel).read_bytes() == data
        assert sorted(p.name for p in workdir.parent.iterdir()) == ["work"]  # no data.tar left
        assert sorted(p.name for p in workdir.iterdir()) == ["data"]
    assert store.fetches["blobs/t/dir"] == 1
    assert _entries(cache) == [spec["sha256"]]


def test_an_uncached_folder_input_leaves_no_stray_tar(tmp_path):
    archive = _tar_of({"a.txt": b"a"})
    spec = dict(name="data", kind="dir", size=len(archive), sha256=_sha(archive), object_key="k")
    store = CountingStore({"k": archive})
    for cache in (None, _cache(tmp_path, limit=len(archive))):  # off, and too big to keep
        workdir = _new_workdir(tmp_path, f"run-{cache is None}")
        stage_inputs(store, "ex", [spec], workdir, cache)
        assert (workdir / "data" / "a.txt").read_bytes() == b"a"
        assert sorted(p.name for p in workdir.parent.iterdir()) == ["work"]
    assert store.fetches["k"] == 2
    assert not (tmp_path / ".input-cache").exists()


def test_a_damaged_folder_entry_is_fetched_again(tmp_path):
    archive = _tar_of({"a.txt": b"a" * 1000})
    spec = dict(name="data", kind="dir", size=len(archive), sha256=_sha(archive), object_key="k")
    store = CountingStore({"k": archive})
    cache = _cache(tmp_path)
    stage_inputs(store, "ex1", [spec], _new_workdir(tmp_path, "run1"), cache)
    (cache.root / spec["sha256"]).write_bytes(b"\0" * len(archive))
    workdir = _new_workdir(tmp_path, "run2")
    stage_inputs(store, "ex2", [spec], workdir, cache)
    assert store.fetches["k"] == 2
    assert (workdir / "data" / "a.txt").read_bytes() == b"a" * 1000
    assert (cache.root / spec["sha256"]).read_bytes() == archive


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_checksum_mismatch_propagates_and_leaves_nothing_in_the_cache(tmp_path, kind):
    good = _tar_of({"a.txt": b"good"}) if kind == "dir" else b"good bytes"
    stored = b"tampered" + good
    spec = dict(name="in", kind=kind, size=len(good), sha256=_sha(good), object_key="k")
    store = CountingStore({"k": stored})
    cache = _cache(tmp_path)
    with pytest.raises(ChecksumMismatch) as err:
        stage_inputs(store, "ex", [spec], _new_workdir(tmp_path, "run"), cache)
    assert err.value.name == "in"
    assert _entries(cache) == []  # neither an entry nor a .part file
    assert cache.path_if_valid(spec["sha256"]) is None


def _evict_right_after_publishing(cache, monkeypatch) -> None:
    """Make every new entry vanish the moment it is published, as another runner's evict() could."""
    publish = cache.add

    def add_then_lose(sha256, verified_file):
        entry = publish(sha256, verified_file)
        entry.unlink()
        return entry

    monkeypatch.setattr(cache, "add", add_then_lose)


def test_an_entry_evicted_right_after_the_fetch_is_fetched_again_for_the_copy(tmp_path, monkeypatch):
    """Another runner's eviction can remove the new entry before it is copied into /work."""
    data = b"raced"
    spec = _file_spec("in.txt", data)
    store = _store_with((spec, data))
    cache = _cache(tmp_path)
    _evict_right_after_publishing(cache, monkeypatch)
    workdir = _new_workdir(tmp_path, "run")
    stage_inputs(store, "ex", [spec], workdir, cache)
    assert (workdir / "in.txt").read_bytes() == data
    assert store.fetches[spec["object_key"]] == 2


def test_a_folder_entry_evicted_right_after_the_fetch_is_still_staged(tmp_path, monkeypatch):
    archive = _tar_of({"a.txt": b"a"})
    spec = dict(name="data", kind="dir", size=len(archive), sha256=_sha(archive), object_key="k")
    store = CountingStore({"k": archive})
    cache = _cache(tmp_path)
    _evict_right_after_publishing(cache, monkeypatch)
    workdir = _new_workdir(tmp_path, "run")
    stage_inputs(store, "ex", [spec], workdir, cache)
    assert (workdir / "data" / "a.txt").read_bytes() == b"a"


def test_evict_removes_partial_downloads_older_than_an_hour_only(tmp_path):
    cache = _cache(tmp_path)
    cache.root.mkdir()
    stale = cache.root / f".{'a' * 64}.123.part"
    fresh = cache.root / f".{'b' * 64}.456.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cache.evict()
    assert not stale.exists()
    assert fresh.exists()


def test_partial_downloads_do_not_push_out_entries(tmp_path):
    cache = _cache(tmp_path, limit=100)
    data = b"k" * 25
    part = cache.new_entry_path(_sha(data))
    part.write_bytes(data)
    entry = cache.add(_sha(data), part)
    (cache.root / f".{'c' * 64}.1.part").write_bytes(b"p" * 500)  # someone else's download
    cache.evict()
    assert entry.exists()


def test_the_cache_directory_is_private(tmp_path):
    data = b"secret input"
    spec = _file_spec("in.txt", data)
    cache = _cache(tmp_path)
    stage_inputs(_store_with((spec, data)), "ex", [spec], _new_workdir(tmp_path, "run"), cache)
    assert cache.root.is_dir()
    assert cache.root.stat().st_mode & 0o777 == 0o700


def test_for_settings_turns_the_cache_off_at_zero_and_puts_it_beside_the_runs(tmp_path):
    assert InputCache.for_settings(WorkerSettings(input_cache_mb=0, work_root=str(tmp_path))) is None
    cache = InputCache.for_settings(WorkerSettings(input_cache_mb=3, work_root=str(tmp_path)))
    assert cache.root == tmp_path / ".input-cache"
    assert cache.limit == 3 * MB


@pytest.mark.parametrize("name", ["../x", "A" * 64, "a" * 63, "a" * 65, "", "../" + "a" * 61])
def test_names_that_are_not_a_sha256_are_refused(tmp_path, name):
    cache = _cache(tmp_path)
    with pytest.raises(ValueError):
        cache.copy_out(name, tmp_path / "out")
    with pytest.raises(ValueError):
        cache.path_if_valid(name)
    with pytest.raises(ValueError):
        cache.new_entry_path(name)
    with pytest.raises(ValueError):
        cache.add(name, tmp_path / "whatever")
    assert not (tmp_path / "out").exists()


class SlowStore(CountingStore):
    """Writes each object in small pieces with a pause between them, so two downloads overlap."""

    def fetch(self, spec: InputSpec, dest: Path) -> None:
        key = spec.url
        self.fetches[key] += 1
        data = self.objects[key]
        with open(dest, "wb") as f:
            for i in range(0, len(data), 4096):
                f.write(data[i:i + 4096])
                f.flush()
                time.sleep(0.001)


@pytest.mark.parametrize("runs", [2, 4])
def test_runs_of_one_process_staging_the_same_input_at_once_each_get_it_whole(tmp_path, runs):
    """A node's runs are threads of one runner process: the first runs of a batch want the same
    script at the same moment. Each gets the whole file, and it is downloaded once."""
    import threading

    data = os.urandom(60_000)
    spec = _file_spec("data.bin", data)
    store = SlowStore({spec["object_key"]: data})
    cache = _cache(tmp_path)
    results: dict[int, object] = {}
    start = threading.Barrier(runs)

    def run(i: int) -> None:
        workdir = _new_workdir(tmp_path, f"run-{i}")
        start.wait()
        try:
            stage_inputs(store, f"ex-{i}", [spec], workdir, cache)
            results[i] = (workdir / "data.bin").read_bytes()
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(results.get(i) == data for i in range(runs)), {i: type(r).__name__ for i, r in results.items()}
    assert store.fetches[spec["object_key"]] == 1
    assert _entries(cache) == [spec["sha256"]]  # one entry, no partial download left behind
