"""Property tests: the driver's checksum against the datasheet rule for any register values."""

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from drivers.atm90e26 import checksum


def datasheet_rule(values):
    data = b"".join(v.to_bytes(2, "big") for v in values)
    low = sum(data) % 256
    high = reduce(lambda a, b: a ^ b, data, 0)
    return high << 8 | low


@given(st.lists(st.integers(0, 0xFFFF), min_size=10, max_size=11))
def test_checksum_equals_the_datasheet_rule(values):
    assert checksum(values) == datasheet_rule(values)
