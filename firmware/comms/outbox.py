"""The bounded queue of messages waiting to go to the back office, for either transport.

    box = Outbox(32)                        # MQTT: events and acks
    box = Outbox(16, drop=LORA_DROP)        # LoRaWAN: states, acks, events, meter readings
    box.put(EVENT, (stamp, kind, balance, value))
    box.put_once(STATE)                     # one waiting at most; its fields come when sent
    item = box.head()                       # the next to send (None: empty)
    item.payload = sign(item)               # first sent: signed and numbered, then kept
    box.done(item)                          # delivered (or given up): off the queue

An item is `kind` (STATE, ACK, EVENT, METER: the order of the LoRaWAN uplink types),
`fields` (what the transport formats: None for a state or a meter reading, which are
built when sent so they are never stale), `payload` (None until first sent: the signed
bytes, which keep their seq across retries) and `tries` (attempts that failed).

The rules both transports share:
- an ack goes ahead of every item not yet on its way that is not an ack (the back
  office is waiting for it); an item already sent keeps its place at the head;
- when the queue is full the oldest item not yet on its way of the first kind in
  `drop` that has one goes (MQTT: an event; LoRaWAN: an event, then a meter reading, a
  state, an ack); when every item has been sent, the head goes. Either way it is
  counted in `dropped`.
Nothing here formats, signs or sends: the conversations do (firmware/comms/mqtt/
conversation.py, firmware/comms/lora/conversation.py).
"""

STATE = 0
ACK = 1
EVENT = 2
METER = 3
LORA_DROP = (EVENT, METER, STATE, ACK)


class Item:
    __slots__ = ("kind", "fields", "payload", "tries")

    def __init__(self, kind, fields):
        self.kind = kind
        self.fields = fields
        self.payload = None  # the signed bytes once first sent
        self.tries = 0

    def sent(self):
        """True once the item is on its way (signed): it keeps its bytes and place."""
        return self.payload is not None


class Outbox:
    def __init__(self, size, drop=(EVENT,)):
        self.size = size
        self.drop = drop
        self.items = []  # oldest first
        self.dropped = 0

    def __len__(self):
        return len(self.items)

    def head(self):
        """The next item to send, None when the queue is empty."""
        return self.items[0] if self.items else None

    def waiting(self, kind):
        """The index of the oldest item of `kind` not yet on its way, or None."""
        q = self.items
        for i in range(len(q)):
            if q[i].kind == kind and q[i].payload is None:
                return i
        return None

    def put(self, kind, fields=None):
        """Queue an item (see the rules above); returns it."""
        q = self.items
        if len(q) >= self.size:
            for k in self.drop:
                i = self.waiting(k)
                if i is not None:
                    q.pop(i)
                    break
            else:
                q.pop(0)
            self.dropped += 1
        i = len(q)
        if kind == ACK:
            while i and q[i - 1].kind != ACK and q[i - 1].payload is None:
                i -= 1
        item = Item(kind, fields)
        q.insert(i, item)
        return item

    def put_once(self, kind):
        """Queue a `kind` (a state, a meter reading) unless one already waits unsent."""
        if self.waiting(kind) is None:
            self.put(kind)

    def done(self, item):
        """Take `item` off the head (delivered, or given up); False when it is no longer
        there (dropped while it was on its way)."""
        q = self.items
        if q and q[0] is item:
            q.pop(0)
            return True
        return False
