"""Portable self-tests of tests/support.py; also gives the MicroPython bridge a module to run."""

import support


def _boom(kind, msg="boom"):
    raise kind(msg)


def _quiet(*args, **kw):
    return args, kw


def test_raises_returns_the_exception():
    e = support.raises(ValueError, _boom, ValueError, msg="bad price")
    assert isinstance(e, ValueError)
    assert e.args == ("bad price",)


def test_raises_accepts_a_base_class_and_tuples():
    assert isinstance(support.raises(Exception, _boom, KeyError), KeyError)
    assert isinstance(support.raises((TypeError, KeyError), _boom, KeyError), KeyError)


def test_raises_fails_when_nothing_is_raised():
    try:
        support.raises(ValueError, _quiet, 1, x=2)
    except AssertionError as e:
        assert "ValueError" in str(e)
        assert "_quiet" in str(e)
    else:
        raise AssertionError("raises() did not fail")


def test_raises_lets_other_exceptions_through():
    try:
        support.raises(ValueError, _boom, KeyError)
    except KeyError:
        pass
    else:
        raise AssertionError("KeyError was swallowed")


def test_runtime_flag_matches_interpreter():
    import sys

    assert support.MICROPYTHON == (sys.implementation.name == "micropython")
