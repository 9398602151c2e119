"""Ray's token authentication: every Ray process we start gets the token from a file, never from an
environment variable; a worker moves the token of its launch environment into a private file."""
from __future__ import annotations

import stat

import pytest

from rgrid_runner.node import RAY_TOKEN_VARS, token_to_file
from rgrid_service.localgrid import bootstrap
from rgrid_service.raynet import ray_process_env, write_token


def test_every_ray_process_runs_in_token_mode_with_the_named_file():
    env = ray_process_env({"RGRID_RAY_TOKEN_FILE": "/x/ray-token", "RAY_AUTH_TOKEN": "leaked", "PATH": "/bin"})
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/x/ray-token"
    assert "RAY_AUTH_TOKEN" not in env and env["PATH"] == "/bin"


def test_a_ray_process_without_a_token_file_is_refused():
    with pytest.raises(ValueError, match="RGRID_RAY_TOKEN_FILE is not set"):
        ray_process_env({"PATH": "/bin"})


def test_token_files_are_private_from_the_start(tmp_path):
    write_token(tmp_path / "t", "abc")
    assert stat.S_IMODE((tmp_path / "t").stat().st_mode) == 0o600 and (tmp_path / "t").read_text() == "abc"


def test_the_local_grid_makes_its_token_once(tmp_path):
    path = bootstrap.ray_token(tmp_path)
    first = path.read_text()
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bootstrap.ray_token(tmp_path).read_text() == first


def test_a_worker_moves_its_token_into_a_private_file(tmp_path):
    env = {"RGRID_RAY_AUTH_TOKEN": "t0ken", "RGRID_WORK_ROOT": str(tmp_path / "work"), "RGRID_RAY_TOKEN_FILE": "/other"}
    folder = token_to_file(env)
    token = folder / "token"
    assert env["RGRID_RAY_TOKEN_FILE"] == str(token) and token.read_text() == "t0ken"
    assert "RGRID_RAY_AUTH_TOKEN" not in env and "RGRID_RAY_AUTH_TOKEN" in RAY_TOKEN_VARS
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert folder.parent == tmp_path / "work"


def test_a_worker_without_a_token_does_not_start(tmp_path):
    with pytest.raises(SystemExit, match="RGRID_RAY_AUTH_TOKEN is not set"):
        token_to_file({"RGRID_WORK_ROOT": str(tmp_path)})
