"""Runtime images pinned by digest (rgrid_core.imagedigests): the builder records each image's
manifest digest beside the registry's storage, the control plane publishes them, and a worker
pulls, checks and runs an image only by its digest, refusing a runtime without one or an image
that is another. Against fake engines and registries; tests/docker/test_image_pinning.py does it
on a real engine and registry."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import docker
import pytest
from pydantic import ValidationError

from rgrid_core import imagedigests
from rgrid_core import workerwire as wire
from rgrid_core.runtimes import CATALOGUE
from rgrid_runner import container, runner
from rgrid_runner.runner import run_execution
from rgrid_runner.sandbox import SandboxError
from rgrid_runner.settings import WorkerSettings
from rgrid_runner.workerclient import WorkerClient
from rgrid_service import images
from rgrid_service.api import workerapi
from rgrid_service.settings import ServiceSettings
from tests.httpstandin import server  # noqa: F401 - the fixture

REGISTRY = "10.0.0.2:5000"
PY = CATALOGUE["python:3.11"]


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


GOOD, OTHER = digest_of("the built image"), digest_of("an image pushed over its tag")


class FakeImage:
    def __init__(self, repo_digests):
        self.attrs = {"RepoDigests": list(repo_digests), "Size": 1000}


class FakeImages:
    """An engine's images: `held` by reference; a pull of a reference answers from `registry`
    (reference -> the RepoDigests the pulled image gets, or an exception)."""

    def __init__(self, held=None, registry=None):
        self.held, self.registry, self.pulled = dict(held or {}), dict(registry or {}), []

    def get(self, reference):
        if reference not in self.held:
            raise docker.errors.ImageNotFound(reference)
        return self.held[reference]

    def pull(self, reference):
        self.pulled.append(reference)
        answer = self.registry.get(reference, docker.errors.NotFound("manifest unknown"))
        if isinstance(answer, Exception):
            raise answer
        self.held[reference] = FakeImage(answer)
        return self.held[reference]


class FakeEngine:
    def __init__(self, images_):
        self.images = images_


def pinned(runtime=PY, digest=GOOD):
    return f"{REGISTRY}/{runtime.repository}@{digest}"


# --- the worker -------------------------------------------------------------------------------


def test_the_image_is_pulled_by_its_digest_checked_and_run_by_it():
    engine = FakeEngine(FakeImages(registry={pinned(): [pinned()]}))
    assert container.ensure_image(engine, PY, REGISTRY, GOOD) == pinned()
    assert engine.images.pulled == [pinned()]  # never the tag
    assert container.ensure_image(engine, PY, REGISTRY, GOOD) == pinned()
    assert engine.images.pulled == [pinned()]  # held: not pulled again


def test_a_runtime_without_a_published_digest_is_refused_with_a_sentence():
    engine = FakeEngine(FakeImages(held={PY.image(REGISTRY): FakeImage([pinned(digest=OTHER)])}))
    with pytest.raises(SandboxError) as refused:
        container.ensure_image(engine, PY, REGISTRY, None)
    assert str(refused.value).startswith("This worker runs no python:3.11 image: the control plane published no digest")
    assert "rebuild the runtime images" in str(refused.value)
    assert engine.images.pulled == []  # the tag it holds is not run either


def test_an_image_that_is_not_the_recorded_one_is_refused():
    # The engine answers the reference with an image whose RepoDigests do not hold it.
    engine = FakeEngine(FakeImages(held={pinned(): FakeImage([pinned(digest=OTHER)])}))
    with pytest.raises(SandboxError) as refused:
        container.ensure_image(engine, PY, REGISTRY, GOOD)
    said = str(refused.value)
    assert said.startswith(f"The image of runtime python:3.11 in the registry at {REGISTRY} is not the one its "
                           f"builder recorded ({GOOD})")
    assert "rebuild the runtime images with `python -m rgrid_service.images`" in said


def test_a_registry_without_the_recorded_manifest_is_refused_the_same_way():
    engine = FakeEngine(FakeImages())  # its registry has no such manifest (only a tag pushed over it, say)
    with pytest.raises(SandboxError, match="is not the one its builder recorded"):
        container.ensure_image(engine, PY, REGISTRY, GOOD)
    assert engine.images.pulled == [pinned()]


def test_a_registry_away_is_a_pull_failure_not_a_mismatch():
    engine = FakeEngine(FakeImages(registry={pinned(): docker.errors.APIError("connection refused")}))
    with pytest.raises(SandboxError, match="could not be pulled from"):
        container.ensure_image(engine, PY, REGISTRY, GOOD)


def test_prepull_pulls_what_has_a_digest_and_says_which_runtimes_it_refuses():
    node = CATALOGUE["node:20"]
    engine = FakeEngine(FakeImages(registry={pinned(): [pinned()], pinned(node): [pinned(node)]}))
    pulled, refused = container.prepull(engine, REGISTRY, {"python:3.11": GOOD, "node:20": GOOD})
    assert pulled == [pinned(), pinned(node)]
    assert [s.split(" image:")[0] for s in refused] == [f"This worker runs no {n}" for n in CATALOGUE
                                                         if n not in ("python:3.11", "node:20")]
    held = container.held_images(engine, REGISTRY, {"python:3.11": GOOD, "node:20": OTHER})
    assert [h["runtime"] for h in held] == ["python:3.11"]  # node:20's published digest is not the one held


def test_a_claim_without_a_digest_fails_the_run_with_the_sentence(server, tmp_path, monkeypatch):
    script = b"print('hi')\n"
    claim = dict(attempt=1, script="s.py", args=[], env={}, runtime="python:3.11", timeout_seconds=30,
                 inputs=[dict(name="s.py", sha256=hashlib.sha256(script).hexdigest(), size=len(script),
                              url=server.url + "/blobs/script")])
    server.objects["/blobs/script"] = script
    server.answer("POST", wire.CLAIM.format(id="ex1"), (200, claim))  # an old control plane: no image_digest
    server.answer("POST", wire.RENEW.format(id="ex1", attempt=1), (200, {"kept": True}))
    server.answer("POST", wire.FINISH.format(id="ex1", attempt=1), (200, {"committed": True}))
    engine = FakeEngine(FakeImages(held={PY.image(REGISTRY): FakeImage([])}))
    monkeypatch.setattr(runner, "_docker", lambda host: engine)
    settings = WorkerSettings(work_root=str(tmp_path), input_cache_mb=0, docker_host="unix:///nonexistent.sock",
                              image_registry=REGISTRY)
    run_execution("ex1", WorkerClient(server.url, "rgw_t", outage_budget=3.0), settings)
    body = json.loads(server.requests("POST", wire.FINISH.format(id="ex1", attempt=1))[-1]["body"])
    assert body["status"] == "failed"
    assert body["reason"].startswith("This worker runs no python:3.11 image")
    assert engine.images.pulled == []


def test_the_wire_takes_only_sha256_digests():
    assert wire.RuntimeDigests(digests={"python:3.11": GOOD}).digests == {"python:3.11": GOOD}
    with pytest.raises(ValidationError):
        wire.RuntimeDigests(digests={"python:3.11": "latest"})
    with pytest.raises(ValidationError):
        wire.ClaimResponse(attempt=1, script="s.py", args=[], env={}, runtime="python:3.11", timeout_seconds=1,
                           inputs=[], image_digest="sha256:abc")


# --- the builder and the control plane --------------------------------------------------------


class FakeRegistry:
    """What the registry's HEAD of a manifest answers now (the tag may have been pushed over)."""

    address = REGISTRY

    def __init__(self, storage: Path, now: dict[str, str]):
        self.storage, self.now, self.asked = storage, now, []

    def digest(self, repository, tag):
        self.asked.append(repository)
        return self.now.get(repository)

    def has(self, repository, tag):
        return repository in self.now


def built(name, digest=None):
    return images.Built(name, CATALOGUE[name].image(REGISTRY), digest is None, 1.0, 1.0, digest)


def test_the_builder_records_the_pushed_digest_beside_the_storage_not_inside(tmp_path):
    storage = tmp_path / "registry"
    storage.mkdir()
    path = imagedigests.digests_file_for(storage)
    assert path == tmp_path / "rgrid-image-digests.json"  # beside what the registry serves
    registry = FakeRegistry(storage, {PY.repository: OTHER})
    images.record_digests(registry, [built("python:3.11", GOOD)], path)
    assert json.loads(path.read_text()) == {"python:3.11": {"repository": PY.repository, "tag": PY.tag, "digest": GOOD}}
    assert registry.asked == []  # the push's own digest, not what the tag names a moment later
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert imagedigests.published(path) == {"python:3.11": GOOD}


def test_a_cached_image_keeps_its_recorded_digest_though_its_tag_was_pushed_over(tmp_path):
    path = tmp_path / "digests.json"
    node = CATALOGUE["node:20"]
    registry = FakeRegistry(tmp_path, {PY.repository: OTHER, node.repository: GOOD})
    images.record_digests(registry, [built("python:3.11", GOOD)], path)
    images.record_digests(registry, [built("python:3.11"), built("node:20")], path)  # both cached now
    assert imagedigests.published(path) == {"python:3.11": GOOD, "node:20": GOOD}
    assert registry.asked == [node.repository]  # only the image with no record is asked for


def test_build_all_records_every_image_cached_ones_included(tmp_path):
    storage = tmp_path / "registry"
    registry = FakeRegistry(storage, {r.repository: digest_of(n) for n, r in CATALOGUE.items()})
    results = images.build_all(None, registry, report=lambda line: None)
    assert all(r.cached for r in results)
    assert imagedigests.published(imagedigests.digests_file_for(storage)) == {n: digest_of(n) for n in CATALOGUE}


def test_a_registry_without_a_digest_stops_the_build_with_a_sentence(tmp_path):
    with pytest.raises(images.BuildError, match="gave no manifest digest"):
        images.record_digests(FakeRegistry(tmp_path, {}), [built("python:3.11")], tmp_path / "d.json")


def test_the_control_plane_publishes_only_the_current_recipes_digests(tmp_path):
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({
        "python:3.11": {"repository": PY.repository, "tag": PY.tag, "digest": GOOD},
        "node:20": {"repository": CATALOGUE["node:20"].repository, "tag": "an-older-recipe", "digest": GOOD},
        "ffmpeg": {"repository": CATALOGUE["ffmpeg"].repository, "tag": CATALOGUE["ffmpeg"].tag, "digest": "latest"},
        "no-such-runtime": {"repository": "x", "tag": "y", "digest": GOOD},
    }))
    settings = ServiceSettings(image_digests_file=str(path))
    assert workerapi.runtime_digests(settings).digests == {"python:3.11": GOOD}
    assert workerapi.runtime_digests(ServiceSettings(image_digests_file=None)).digests == {}
    assert workerapi.runtime_digests(ServiceSettings(image_digests_file=str(tmp_path / "none.json"))).digests == {}
    path.write_text("{not json")
    assert workerapi.runtime_digests(settings).digests == {}  # logged; the workers refuse, each with a sentence


def test_the_digests_file_is_read_again_only_when_it_changed(tmp_path, monkeypatch):
    """Every claim asks for the published digests: the file is parsed once, then again only after
    the builder replaced it (os.replace: a new inode) or it was edited."""
    path = tmp_path / "digests.json"
    imagedigests.write(path, {"python:3.11": {"repository": PY.repository, "tag": PY.tag, "digest": GOOD}})
    reads = []
    real_read = imagedigests.read
    monkeypatch.setattr(imagedigests, "read", lambda p: reads.append(p) or real_read(p))
    for _ in range(3):
        assert imagedigests.published(path) == {"python:3.11": GOOD}
    assert len(reads) == 1
    imagedigests.write(path, {"python:3.11": {"repository": PY.repository, "tag": PY.tag, "digest": OTHER}})
    assert imagedigests.published(path) == {"python:3.11": OTHER}
    assert len(reads) == 3  # write() reads the old records to merge, then published() reads the new file
    path.unlink()
    assert imagedigests.published(path) == {}


def test_the_local_grid_hands_its_api_the_digests_file(tmp_path):
    from rgrid_core.localstate import GridState
    from rgrid_service.localgrid import docker as localdocker

    state = GridState(home=str(tmp_path), api_url="", api_key="", ray_address="", dashboard_url="", s3_endpoint="",
                      database_url="")
    assert localdocker.control_plane_env(state, {}) == {}
    beside_cache = {"RGRID_IMAGE_DIGESTS_FILE": str(localdocker.digests_file())}
    assert localdocker.control_plane_env(state, {"RGRID_DOCKER_HOST": "unix:///mine.sock"}) == beside_cache
    assert localdocker.control_plane_env(state, {"RGRID_DOCKER_HOST": "unix:///mine.sock",
                                                 "RGRID_IMAGE_DIGESTS_FILE": "/srv/d.json"}) == {}  # theirs stays
    state.docker_host = "unix:///x.sock"
    assert localdocker.control_plane_env(state, {}) == beside_cache
    assert localdocker.digests_file().parent == images.registry_storage().resolve().parent


def test_a_worker_of_an_older_control_plane_pulls_nothing_and_says_why(server, monkeypatch, capsys):
    from rgrid_runner import node

    engine = FakeEngine(FakeImages(registry={pinned(): [pinned()]}))
    monkeypatch.setattr(container, "docker_client", lambda host: engine)
    # The stand-in answers 404 for the digests route, as an API without it does.
    node.pull_runtime_images(WorkerSettings(docker_host="unix:///x.sock", image_registry=REGISTRY, api_url=server.url,
                                            worker_token="rgw_t"))
    said = capsys.readouterr().err
    assert engine.images.pulled == []
    assert said.count("the control plane published no digest") == len(CATALOGUE)
    assert "0 runtime images present and checked" in said
