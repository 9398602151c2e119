"""rgrid_core.retry.retrying: errors for which `when` is true are tried again, others raised at
once; Ctrl-C and SystemExit always go through at once, whatever `when` says."""
from __future__ import annotations

import pytest

from rgrid_core.retry import retrying


def failing(exc: BaseException, then=None):
    calls = []

    def fn():
        calls.append(1)
        if then is not None and len(calls) > 1:
            return then
        raise exc

    return fn, calls


def test_an_error_when_accepts_is_tried_again_until_it_passes():
    fn, calls = failing(ConnectionError("blip"), then="ok")
    assert retrying(fn, seconds=5, first_wait=0.01) == "ok" and len(calls) == 2


def test_an_error_when_refuses_is_raised_at_once():
    fn, calls = failing(ValueError("bad"))
    with pytest.raises(ValueError):
        retrying(fn, seconds=5, when=lambda e: not isinstance(e, ValueError), first_wait=0.01)
    assert len(calls) == 1


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(3)])
@pytest.mark.parametrize("when", [lambda e: True, lambda e: not isinstance(e, RuntimeError)])
def test_ctrl_c_and_exit_are_never_ridden_out(stop, when):
    fn, calls = failing(stop)
    with pytest.raises(type(stop)):
        retrying(fn, seconds=30, when=when, first_wait=0.01)
    assert len(calls) == 1
