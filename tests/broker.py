"""CPython only: the `broker` pytest fixture, a real mosquitto (tools/sim/broker.py).

    from broker import broker_fixture  # noqa: F401 - the fixture named `broker`

When mosquitto is missing the fixture FAILS, never skips: CI installs it (.ci/run) and
a test run that silently left out the broker tests would hide exactly what they are for.
"""

import pytest

from tools.sim.broker import INSTALL_HINT, Broker, BrokerError, find_mosquitto, free_port

__all__ = ["Broker", "broker_fixture", "free_port"]


@pytest.fixture(scope="module", name="broker")
def broker_fixture():
    """A running Broker for the test module; fails (never skips) without mosquitto."""
    if find_mosquitto() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    b = Broker()
    try:
        b.start()
    except BrokerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield b
    finally:
        b.stop()
