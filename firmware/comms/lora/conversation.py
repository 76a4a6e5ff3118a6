"""The back office over LoRaWAN: top-up downlinks in, signed 11-byte uplinks out.

The counterpart of firmware/comms/mqtt/conversation.py for a meter whose transport is "lorawan":

    lc = LoRaComms(app, link, key)     # link: drivers/lorawan.LoRaWAN (run, send, take,
    app.comms = lc                     #   hold_ms, joined, telemetry); key: the MeterKey
    asyncio.create_task(link.run())    # the driver keeps the modem joined
    asyncio.create_task(lc.run())      # downlinks, acks, events, state: forever

It owns the conversation, not the radio:
- Top-ups. A downlink on lorapayload.TOPUP_PORT (the compact token as 9 bytes or 10 of
  BCD, or the 70-byte envelope) goes to `lorapayload.apply_downlink(app, payload)`, the one
  credit path: its anti-replay decides, so a downlink the network delivers twice credits
  once and the second answers `used`. A payload that is no token answers `format`. The
  downlinks wait in the driver's inbox and are taken here, outside the UART poll (the
  credit path writes the journal). Other ports are counted (`strays`) and ignored.
- Acks. Each top-up downlink is answered by one token-ack uplink (lorapayload.Uplinks:
  result code, token id low 16 bits, balance after it), sent confirmed, ahead of the
  events not yet sent; tried `tries` times when the network does not acknowledge it.
- Events. Only the kinds in AIR_EVENTS (below) cost airtime; the others are counted
  (`skipped`): the ack and the state already carry a top-up, and repeats (reminders,
  each max-power trip, keypad rejects, billing months) would spend a duty cycle that a
  SF12 meter has little of. Unconfirmed.
- State and meter reading. The state uplink after every join, after a top-up, a
  disconnect, reconnect or ready-for-reconnection, and whenever the relay's contacts
  move; the state and the meter reading (energy, open reasons, task errors) together
  every `lora_state_period_s`. A state waiting in the outbox is built when it is sent, so
  it is never stale, and there is at most one of each waiting. Unconfirmed.
- Numbering. Every uplink is signed and numbered (boot = App.boots, journaled before the
  first uplink of a start; seq from 1) when it is first sent, so the seq order is the
  air order the back office's lorapayload.Receiver requires; a retry keeps its bytes.
- The outbox (firmware/comms/outbox.py). `queue_max` uplinks wait while the modem is
  not joined or the duty cycle holds the band (lorawan.hold_ms): the loop keeps taking
  downlinks meanwhile instead of sitting in the driver's hold. Full: the oldest event not
  yet sent goes first, then the oldest meter reading, state, ack (counted in the
  outbox's `dropped`). An uplink the DR cannot carry (too_long) is dropped, never sent.
- Deadlines. Every await has one: the uplink `send_ms` (the confirmed end event and at
  most a short hold), the loop's sleeps. Any failure is counted and the loop goes on
  after a second; nothing here is on the metering path.
"""

from firmware.billing import events as ev
from firmware.comms.lora import payload as lp
from firmware.comms.outbox import ACK, EVENT, LORA_DROP, METER, STATE, Outbox
from firmware.tokens import codes as rc
from firmware.billing.settings import parse_meter_id
from firmware.tokens.keys import meter_id_bytes

# The event kinds worth airtime: the supply cut or back, credit running out, a lockout,
# a relay fault, a tariff change. A start shows as the state after the join (a new boot
# number); the start-up events (boot, config_*) come before the conversation exists.
AIR_EVENTS = (
    ev.LOW_CREDIT,
    ev.DISCONNECT,
    ev.RECONNECT,
    ev.READY_FOR_RECONNECTION,
    ev.EMERGENCY_CREDIT,
    ev.MAX_POWER_LOCKOUT,
    ev.RELAY_FAULT,
    ev.TARIFF_ACTIVATED,
)
_STATE_EVENTS = (ev.DISCONNECT, ev.RECONNECT, ev.TOPUP, ev.READY_FOR_RECONNECTION)

_NAMES = ("state", "ack", "event", "meter")  # the stats of each outbox kind

# drivers/lorawan.py LoRaError reasons (firmware imports nothing of drivers)
_TOO_LONG = "too_long"
_DUTY_CYCLE = "duty_cycle"
_NOT_JOINED = "not_joined"
_BUSY = "busy"


class LoRaComms:
    """app: firmware.app.App; link: drivers/lorawan.LoRaWAN; key: the MeterKey (signs;
    after a key change token the new key does)."""

    def __init__(self, app, link, key, queue_max=16, tries=3, poll_ms=50, send_ms=60000):
        s = app.meter.settings
        self.app = app
        self.link = link
        self.clock = app.board.clock
        self.meter_id = parse_meter_id(s.meter_id)
        self.up = lp.Uplinks(key.msg_mac(), meter_id_bytes(self.meter_id), app.boots)
        self.tries = tries
        self.poll_ms = poll_ms
        self.send_ms = send_ms
        self.outbox = Outbox(queue_max, drop=LORA_DROP)  # firmware/comms/outbox.py
        self._state_at = None
        self._relay_seen = None
        self._was_online = False
        self.stats = {
            "uplinks": 0,
            "acks": 0,
            "events": 0,
            "states": 0,
            "meters": 0,
            "topups": 0,
            "strays": 0,
            "skipped": 0,
            "unacked": 0,
            "refused": 0,
            "held": 0,
            "joins": 0,
            "errors": 0,
            "last_error": None,
        }
        self._stop = False
        app.meter.log.listeners.append(self._on_event)

    @property
    def online(self):
        return self.link.joined

    @property
    def seq(self):
        return self.up.seq

    def telemetry(self):
        """The conversation's figures beside the modem's (tech.status(), the live meter)."""
        t = self.link.telemetry()
        out = {
            "joined": t.get("joined"),
            "dr": t.get("dr"),
            "rssi": t.get("rssi"),
            "snr": t.get("snr"),
            "airtime_ms": t.get("airtime_ms"),
            "queued": len(self.outbox),
            "boot": self.up.boot,
            "seq": self.up.seq,
        }
        for k in self.stats:
            out[k] = self.stats[k]
        out["dropped"] = self.outbox.dropped
        return out

    # -- what goes up -------------------------------------------------------------------

    def _on_event(self, stamp, kind, balance, value):
        if kind in _STATE_EVENTS:
            self.outbox.put_once(STATE)
        if kind in AIR_EVENTS:
            self.outbox.put(EVENT, (kind, balance, value if isinstance(value, int) else 0))
        else:
            self.stats["skipped"] += 1

    def _payload(self, item):
        mac = self.app.intake.msg_mac()  # the key in force (a key change token)
        if mac is not None:
            self.up.mac = mac
        kind = item.kind
        f = item.fields
        if kind == ACK:
            return self.up.ack(f[0], f[1], f[2])
        if kind == EVENT:
            return self.up.event(f[0], f[1], f[2])
        st = self.app.status()  # a state or meter reading: as it is now
        if kind == STATE:
            power = st["power_w"]
            return self.up.state(
                st["balance"],
                st["credit_status"],
                st["control_state"],
                st["relay"],
                power if isinstance(power, int) else int(power),
            )
        return self.up.meter(st["energy_wh"], st["open_reasons"], st["errors"])

    # -- what comes down ----------------------------------------------------------------

    def _take_downlinks(self):
        while True:
            d = self.link.take()
            if d is None:
                return
            port, payload = d[0], d[1]
            if port != lp.TOPUP_PORT:
                self.stats["strays"] += 1
                continue
            try:
                self._topup(payload)
            except MemoryError:
                raise
            except Exception as e:  # one bad downlink must not lose the others
                self._failed(e)

    def _topup(self, payload):
        self.stats["topups"] += 1
        app = self.app
        got = lp.apply_downlink(app, payload)
        if got is None:
            self.outbox.put(ACK, (rc.FORMAT, 0, app.intake.refuse(rc.FORMAT)))
            return
        r, balance, tid = got
        self.outbox.put(ACK, (r.code, tid, balance))
        self.outbox.put_once(STATE)

    # -- the loop -----------------------------------------------------------------------

    def _due(self):
        clk = self.clock
        now = clk.ticks_ms()
        joined = self.link.joined
        if joined and not self._was_online:
            self.stats["joins"] += 1
            self.outbox.put_once(STATE)  # the network hears of the meter at every join
        self._was_online = joined
        relay = self.app.board.relay.closed
        if relay is not self._relay_seen:  # the contacts moved
            if self._relay_seen is not None:
                self.outbox.put_once(STATE)
            self._relay_seen = relay
        period = self.app.meter.settings.lora_state_period_s * 1000
        if self._state_at is None or clk.ticks_diff(now, self._state_at) >= period:
            self._state_at = now
            self.outbox.put_once(STATE)
            self.outbox.put_once(METER)

    async def run(self):
        """Take downlinks, answer them, send what is due; never returns (until stop())."""
        self._stop = False
        while not self._stop:
            try:
                await self._step()
            except Exception as e:  # the service task must not die
                self._failed(e)
                await self.clock.sleep_ms(1000)

    def stop(self):
        self._stop = True

    def _failed(self, e):
        """A fault of this code (not the radio's): counted here and in app.errors."""
        self.stats["errors"] += 1
        self.stats["last_error"] = repr(e)
        self.app.report_error("loracomms", e)

    async def _step(self):
        link = self.link
        self._take_downlinks()
        self._due()
        box = self.outbox
        if not box or not link.joined:
            await self.clock.sleep_ms(self.poll_ms)
            return
        wait = link.hold_ms(lp.SIZE)
        if wait < 0:  # longer than the daily airtime budget: it would never go
            box.done(box.head())
            self.stats["refused"] += 1
            return
        if wait > 0:  # the duty cycle holds the band: downlinks are still taken
            self.stats["held"] += 1
            await self.clock.sleep_ms(self.poll_ms if wait > self.poll_ms else wait)
            return
        await self._send(box.head())

    async def _send(self, item):
        app = self.app
        if item.payload is None:
            if not app.boots_saved:
                app.save()  # this start's number is in the journal before any uplink
            item.payload = self._payload(item)
        confirmed = item.kind == ACK
        reason = None
        ok = False
        try:
            ok = await self.link.send(lp.UPLINK_PORT, item.payload, confirmed, self.send_ms)
        except Exception as e:
            reason = getattr(e, "reason", None)
            if reason is None:
                self._failed(e)
            else:
                self.stats["last_error"] = reason
        box = self.outbox
        if ok:
            box.done(item)
            self.stats["uplinks"] += 1
            self.stats[_NAMES[item.kind] + "s"] += 1
            return
        if reason == _TOO_LONG:  # the DR cannot carry it: never sent, never retried
            box.done(item)
            self.stats["refused"] += 1
            return
        if reason in (_DUTY_CYCLE, _NOT_JOINED, _BUSY):
            await self.clock.sleep_ms(self.poll_ms)  # not an attempt: it waits its turn
            return
        item.tries += 1  # unacknowledged, timed out, cut by a reboot, refused by the modem
        if item.tries >= self.tries and box.done(item):
            self.stats["unacked"] += 1
        await self.clock.sleep_ms(self.poll_ms)
