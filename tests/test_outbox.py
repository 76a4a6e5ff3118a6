"""firmware/comms/outbox.py: the bounded queue both transports send from.

Portable (CPython pytest and `micropython`). The rules: acks ahead of what is not yet on
its way, a full queue drops the oldest unsent item of the first kind in `drop`, an item
once sent keeps its bytes and its place, at most one state or meter reading waits.
"""

from firmware.comms.outbox import ACK, EVENT, LORA_DROP, METER, STATE, Outbox


def _kinds(box):
    return [(i.kind, i.fields) for i in box.items]


def _send(box):
    """Sign the head as a conversation would (once), return it."""
    item = box.head()
    if item.payload is None:
        item.payload = b"signed " + repr(item.fields).encode()
    return item


def test_items_go_out_in_order_with_named_attributes():
    box = Outbox(4)
    assert len(box) == 0 and not box and box.head() is None
    a = box.put(EVENT, ("e", 1))
    b = box.put(EVENT, ("e", 2))
    assert box and len(box) == 2 and box.head() is a
    assert (a.kind, a.fields, a.payload, a.tries) == (EVENT, ("e", 1), None, 0)
    assert not a.sent()
    _send(box)
    assert a.sent() and a.payload == b"signed ('e', 1)"
    assert box.done(a) and box.head() is b
    assert not box.done(a)  # no longer there: nothing else goes
    assert box.done(b) and len(box) == 0 and box.dropped == 0


def test_an_ack_goes_ahead_of_the_events_not_yet_sent():
    box = Outbox(8)
    box.put(EVENT, 1)
    box.put(EVENT, 2)
    _send(box)  # the first event is on its way: it keeps its place
    box.put(EVENT, 3)
    box.put(ACK, "a")
    box.put(ACK, "b")  # behind the first ack, still ahead of the events
    assert _kinds(box) == [(EVENT, 1), (ACK, "a"), (ACK, "b"), (EVENT, 2), (EVENT, 3)]


def test_an_ack_goes_ahead_of_unsent_states_and_meter_readings_too():
    box = Outbox(8, drop=LORA_DROP)
    box.put_once(STATE)
    _send(box)
    box.put(EVENT, 1)
    box.put_once(METER)
    box.put(ACK, "a")
    assert _kinds(box) == [(STATE, None), (ACK, "a"), (EVENT, 1), (METER, None)]


def test_full_mqtt_drops_the_oldest_event_not_yet_sent_and_counts_it():
    box = Outbox(3)
    box.put(EVENT, 1)
    _send(box)
    box.put(EVENT, 2)
    box.put(EVENT, 3)
    box.put(EVENT, 4)  # 1 is on its way: 2 goes
    assert _kinds(box) == [(EVENT, 1), (EVENT, 3), (EVENT, 4)] and box.dropped == 1
    box.put(ACK, "a")  # the ack is kept: the oldest unsent event (3) goes
    assert _kinds(box) == [(EVENT, 1), (ACK, "a"), (EVENT, 4)] and box.dropped == 2


def test_full_of_acks_the_head_goes_under_the_mqtt_rule():
    box = Outbox(2)
    box.put(ACK, "a")
    box.put(ACK, "b")
    box.put(ACK, "c")  # no event to drop: the head goes, even an unsent ack
    assert _kinds(box) == [(ACK, "b"), (ACK, "c")] and box.dropped == 1
    first = _send(box)
    box.put(EVENT, 1)
    assert _kinds(box) == [(ACK, "c"), (EVENT, 1)]
    assert not box.done(first)  # dropped while on its way: the new head stays
    assert len(box) == 2


def test_full_lora_drops_an_event_then_a_meter_reading_a_state_an_ack():
    box = Outbox(3, drop=LORA_DROP)
    box.put_once(STATE)
    box.put_once(METER)
    box.put(EVENT, 1)
    box.put(ACK, "a")  # full: the event goes
    assert _kinds(box) == [(ACK, "a"), (STATE, None), (METER, None)] and box.dropped == 1
    box.put(ACK, "b")  # no event: the meter reading goes
    assert _kinds(box) == [(ACK, "a"), (ACK, "b"), (STATE, None)] and box.dropped == 2
    box.put(ACK, "c")  # then the state
    assert _kinds(box) == [(ACK, "a"), (ACK, "b"), (ACK, "c")] and box.dropped == 3
    _send(box)
    box.put(ACK, "d")  # then the oldest ack not yet on its way ("a" is)
    assert _kinds(box) == [(ACK, "a"), (ACK, "c"), (ACK, "d")] and box.dropped == 4
    for item in box.items:
        item.payload = b"x"
    box.put(EVENT, 2)  # everything on its way: the head goes
    assert _kinds(box) == [(ACK, "c"), (ACK, "d"), (EVENT, 2)] and box.dropped == 5


def test_one_state_and_one_meter_reading_wait_at_most():
    box = Outbox(8, drop=LORA_DROP)
    box.put_once(STATE)
    box.put_once(STATE)
    box.put_once(METER)
    box.put_once(METER)
    assert _kinds(box) == [(STATE, None), (METER, None)]
    assert box.waiting(STATE) == 0 and box.waiting(METER) == 1 and box.waiting(ACK) is None
    _send(box)  # the state on its way: a new one may wait behind it
    box.put_once(STATE)
    assert _kinds(box) == [(STATE, None), (METER, None), (STATE, None)]
    assert box.waiting(STATE) == 2


def test_a_retried_item_keeps_its_bytes_and_counts_its_tries():
    box = Outbox(4, drop=LORA_DROP)
    box.put(ACK, (1, 9, 100))
    item = _send(box)
    signed = item.payload
    item.tries += 1
    box.put(EVENT, 2)
    assert box.head() is item and _send(box).payload is signed and item.tries == 1
