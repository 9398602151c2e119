"""The control plane's derived keys: worker tokens and sealed env values."""
from __future__ import annotations

import pytest

from rgrid_service.secrets import ControlPlaneKeys, MissingSecretKey, keys_for
from rgrid_service.settings import ServiceSettings

KEYS = ControlPlaneKeys("a" * 40)
OTHER = ControlPlaneKeys("b" * 40)


def test_a_worker_token_is_deterministic_and_names_its_worker():
    token = KEYS.worker_token("w-3")
    assert token == KEYS.worker_token("w-3") and token.startswith("rgw_w-3.")
    assert KEYS.token_worker(token) == "w-3"
    assert KEYS.worker_token("w-4") != token


@pytest.mark.parametrize("forged", [
    OTHER.worker_token("w-3"),  # another control plane's key
    KEYS.worker_token("w-3").replace("w-3", "w-4"),  # the id changed, the MAC kept
    KEYS.worker_token("w-3")[:-1] + "0",
    "rgw_w-3", "rgw_.abc", "rg_" + "x" * 40, "", "rgw_" + "w" * 70 + "." + "0" * 64,
])
def test_anything_but_an_issued_token_names_no_worker(forged):
    assert KEYS.token_worker(forged) is None


def test_env_values_are_sealed_and_open_only_with_the_same_key():
    sealed = KEYS.seal_env({"API_TOKEN": "hunter2", "B": ""})
    assert "hunter2" not in sealed
    assert KEYS.open_env(sealed) == {"API_TOKEN": "hunter2", "B": ""}
    with pytest.raises(ValueError, match="another RGRID_SECRET_KEY") as e:
        OTHER.open_env(sealed)
    assert "hunter2" not in str(e.value)


def test_no_or_a_short_secret_key_is_a_sentence_with_the_next_step():
    with pytest.raises(MissingSecretKey, match="RGRID_SECRET_KEY is not set.*token_urlsafe"):
        keys_for(ServiceSettings(_env_file=None))
    with pytest.raises(MissingSecretKey, match="shorter than"):
        keys_for(ServiceSettings(_env_file=None, secret_key="short"))
    assert keys_for(ServiceSettings(_env_file=None, secret_key="a" * 40)).worker_token("w-1") == KEYS.worker_token("w-1")
