"""MQTT framing: where the first packet of a byte buffer ends (its Remaining Length).

The one parser of the Remaining Length (MQTT 3.1.1, 2.2.3: 1 to 4 bytes of 7 bits, low
first, the top bit saying another byte follows). The session uses it twice: the socket
waits with `size` for a whole packet (drivers/cellular.ModemSocket.wait_packet takes it
as its framing, since drivers import nothing of firmware/), and `bounds` gives where the
packet's body starts when the session reads an ack itself.
"""

_MORE = 0x80
_MAX_LEN_BYTES = 4


def bounds(buf):
    """(offset of the variable header, total length) of the first packet in buf, or None
    while it is incomplete. Raises ValueError on a Remaining Length over 4 bytes."""
    n = len(buf)
    i = 1
    rl = 0
    shift = 0
    while True:
        if i >= n:
            return None
        b = buf[i]
        rl |= (b & 0x7F) << shift
        i += 1
        if not b & _MORE:
            break
        if i > _MAX_LEN_BYTES:
            raise ValueError("MQTT remaining length over 4 bytes")
        shift += 7
    total = i + rl
    return (i, total) if n >= total else None


def size(buf):
    """Length of the first whole packet in buf, 0 while it is incomplete (ValueError as
    bounds)."""
    b = bounds(buf)
    return b[1] if b else 0
