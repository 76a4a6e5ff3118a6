"""The asyncio wiring: metering, relay, persistence and indicator tasks on a board.

The board object (real pins in the board module, simulated in tools/sim) provides:
  clock        ticks_ms(), ticks_diff(a, b), async sleep_ms(ms)
  local_time() (year, month, day, second_of_day) of local time now
  source       energy source: poll() sets .mwh (energy since the last poll) and .power_w;
               optional start() (called once) and on_event(kind, detail) (set by the app)
  relay        drivers.relay.LatchingRelay
  store        load() -> state fields or None; save(fields)
  indicator    drivers.indicator.Indicator or None
  keypad       optional: drivers.keypad.MatrixKeypad (firmware/ui/keyentry.py reads it)
  display      optional: a panel (drivers.ssd1306.SSD1306) that firmware/ui/display.py draws
The metering task calls `step()` every `tick_ms`; `step()` allocates nothing in the
steady state. State is saved at once after a top-up, a relay change or any credit
event, and otherwise when the unsaved charges reach `persist_money` (but not sooner
than `persist_min_s` after the previous save, which caps the flash writes at any load)
or `persist_s` has passed: docs/storage.md derives from these the most a
power cut can lose and the flash life. Every task survives its own
errors: it logs, waits and carries on; metering never depends on the network. An
exception that still escapes a task is counted and logged, and the task starts again a
second later (`_supervise`); one an event listener raises is counted and logged and
never stops the tick or the driver's recovery that emitted the event. Errors are
counted in `errors` (status, the state message, tech.status()) and printed at most
once per `ERROR_LOG_MS` with the number not printed.
"""

import asyncio
import sys

from firmware.billing import events as ev
from firmware.billing import meter as meter_mod
from firmware.tokens.intake import STATE_FIELDS as INTAKE_FIELDS
from firmware.tokens.intake import Intake
from firmware.billing.meter import Meter
from firmware.billing.policy import CONNECTED
from firmware.billing.settings import Settings, with_meter_id
from firmware.billing.tariff import in_windows
from firmware.billing.wallclock import WallClock
from firmware.storage import record

ERROR_LOG_MS = 10000  # at most one error line per 10 s on the console

_PATTERN = {
    ev.LOW_CREDIT: "low_credit",
    ev.LOW_CREDIT_REMINDER: "low_credit",
    ev.DISCONNECT: "disconnected",
    ev.RECONNECT: "reconnected",
    ev.TOPUP: "accepted",
}


# The journal record (one atomic write) holds the meter's state, the token memory and
# the app's own counters: `boots` numbers the signed messages of each start (with a
# sequence number in RAM), `cmd_id` is the last back-office command applied. Each owner
# hands over its fields by name; the record's layout (firmware/storage/layouts.py)
# places them, so an owner's list can grow without moving anyone else's.
APP_FIELDS = ("boots", "cmd_id")
STATE_FIELDS = record.STATE.names
_AT_M = tuple(STATE_FIELDS.index(n) for n in meter_mod.STATE_FIELDS)
_AT_I = tuple(STATE_FIELDS.index(n) for n in INTAKE_FIELDS)
_AT_A = tuple(STATE_FIELDS.index(n) for n in APP_FIELDS)
if len(STATE_FIELDS) != len(_AT_M) + len(_AT_I) + len(_AT_A):
    raise ValueError("record: a field of the layout has no owner")


def _pick(state, at):
    return tuple(state[i] for i in at)


def _fresh(flag):
    """A new asyncio.Event set as `flag` is."""
    e = asyncio.Event()
    if flag.is_set():
        e.set()
    return e


class App:
    def __init__(self, board, settings, tick_ms=1000, key=None, key_path=None, on_settings=None):
        self.board = board
        self.tick_ms = tick_ms
        self.meter = Meter(settings, WallClock(*board.local_time()))
        self.intake = Intake(
            self.meter, self.save, self.request_relay, key, key_path, on_settings=on_settings
        )
        self.comms = None  # firmware/comms/mqtt/conversation.py when the settings name a broker
        self.sms = None  # firmware/sms.Notifier when the settings bind a phone number
        self.errors = 0
        self._err_logged_at = None  # ticks_ms of the last error line printed
        self._err_unlogged = 0  # errors counted since then but not printed
        self.error_write = sys.stdout.write  # where error lines go (the console)
        self.ticks = 0
        self._acc_ms = 0
        self._relay_flag = asyncio.Event()
        self._persist_flag = asyncio.Event()
        self.on_settings = on_settings
        self.meter_id = None  # the meter's own id (meter.id), firmware/build.py sets it
        self.settings_source = "file"  # or "new", "bak", "defaults" (firmware/build.py)
        self.late_ms_max = 0  # longest a metering tick came after its time (loop stalls)
        self.relay_hold = False  # a technician's relay test owns the relay while True
        self.watchdog = None  # machine.WDT (start-up arms it on the board)
        self.watchdog_ms = 0
        self.extra_tasks = []  # coroutines, or functions making them, start-up adds (console)
        if board.indicator is not None:
            board.indicator.quiet = self.quiet_now
        self.entry = None  # firmware/keyentry.Entry when the board has a keypad
        if getattr(board, "keypad", None) is not None:
            from firmware.ui.keyentry import Entry

            self.entry = Entry(self, board.clock)
        self.display = None  # firmware/display.Display when the board has a panel
        if getattr(board, "display", None) is not None:
            from firmware.ui.display import Display

            self.display = Display(self, board.display, board.clock)
        self.boots = 1
        self.cmd_id = 0
        state = board.store.load()
        if state is not None:
            self.meter.restore(_pick(state, _AT_M))
            self.intake.restore(_pick(state, _AT_I))
            self.boots, self.cmd_id = _pick(state, _AT_A)
            self.boots += 1
        self.boots_saved = False  # this start's number is not in the journal yet
        self.meter.log.listeners.append(self._on_event)
        self.meter.log.on_error = self._listener_error
        if hasattr(board.source, "on_event"):  # the metering chip reports its faults
            board.source.on_event = self._source_event
        if hasattr(board.source, "start"):  # metering starts with the meter
            board.source.start()
        self.meter.log.emit(
            self.meter.clock.stamp(), ev.BOOT, self.meter.ledger.balance, 1 if state else 0
        )
        # Credit rules before the relay task first looks: a new meter with no credit
        # must not close its relay for the one tick before the first evaluation.
        self.meter.control.evaluate()
        self._saved_charged = self.meter.ledger.charged
        self._saved_at = board.clock.ticks_ms()
        # After a reboot re-assert the journaled relay state with one pulse in the same
        # direction: it completes an operation a power cut interrupted and cannot flip
        # the contacts against the journal.
        self._relay_flag.set()

    # -- the steady-state tick ---------------------------------------------------
    def step(self, dt_ms):
        acc = self._acc_ms + dt_ms
        # Kept before the poll: if the source fails, its time is billed at the next step
        # instead of being lost from the wall clock and the standing charge.
        self._acc_ms = acc
        src = self.board.source
        src.poll()
        secs = acc // 1000
        self._acc_ms = acc - secs * 1000
        m = self.meter
        # A tick is priced at its start (firmware/billing/meter.py): the passive tariff
        # bills the first tick that starts at or after its activation time.
        if m.settings.tariff_next_from and m.clock.stamp() >= m.settings.tariff_next_from:
            self._activate_tariff()
        m.tick(secs, src.mwh, src.power_w)
        self.ticks += 1
        if m.control.control_state == CONNECTED:
            if self.board.relay.closed is not True:
                self._relay_flag.set()
        elif self.board.relay.closed is not False:
            self._relay_flag.set()
        s = m.settings
        clk = self.board.clock
        since = clk.ticks_diff(clk.ticks_ms(), self._saved_at)
        if since >= s.persist_s * 1000 or (
            m.ledger.charged - self._saved_charged >= s.persist_money
            and since >= s.persist_min_s * 1000
        ):
            self._persist_flag.set()

    def _activate_tariff(self):
        """The passive tariff becomes the active one (DLMS activation time reached)."""
        m = self.meter
        raw = dict(m.settings.raw)
        raw["tariff"] = raw["tariff_next"]
        raw["tariff_next"] = None
        raw["tariff_next_from"] = ""
        self._configure(raw)
        m.log.emit(m.clock.stamp(), ev.TARIFF_ACTIVATED, m.ledger.balance, m.price_now())

    def change_settings(self, changes):
        """Apply {key: value} changes (JSON values, as in settings.json) validated as a
        whole; ValueError naming the field, and nothing changed, when refused."""
        raw = dict(self.meter.settings.raw)
        for k in changes:
            if k not in raw:
                raise ValueError(k + ": unknown setting")
            raw[k] = changes[k]
        if self.meter_id is not None:  # the settings may not rename the meter
            raw = with_meter_id(raw, self.meter_id)
        self._configure(raw, store_first=True)

    def _configure(self, raw, store_first=False):
        """Apply settings and store them; `store_first`: a change someone asked for is
        stored before it applies, so one the file refuses (or none to edit) changes
        nothing."""
        s = Settings(raw)
        if store_first and self.on_settings is not None:
            self.on_settings(s.raw)
        self.meter.configure(s)
        if not store_first and self.on_settings is not None:
            self.on_settings(s.raw)
        self.request_relay()

    def quiet_now(self):
        """True inside the quiet hours (local time): warnings show on the LED only."""
        return in_windows(self.meter.settings.quiet_hours, self.meter.clock)

    def _source_event(self, kind, detail):
        m = self.meter
        m.log.emit(m.clock.stamp(), kind, m.ledger.balance, detail)

    def _on_event(self, stamp, kind, balance, value):
        if kind != ev.BOOT:
            self._persist_flag.set()
        pattern = _PATTERN.get(kind)
        if pattern and self.board.indicator is not None:
            self.board.indicator.play(pattern)

    # -- requests ---------------------------------------------------------------
    def press_button(self):
        ok = self.meter.control.press_button()
        if ok:
            self._relay_flag.set()
        return ok

    def enter(self, token):
        """A token from any source: (tokens.Result, balance); see firmware/tokens/intake.py."""
        return self.intake.enter(token)

    def request_relay(self):
        self._relay_flag.set()

    def status(self):
        """The meter's state now, read once, as plain values (money in minor units, the
        price in price units, the control state as policy's number, the relay as the
        driver knows it: True closed, False open, None unknown). The MQTT state message,
        tech.status(), the LoRaWAN state and meter uplinks and the screens format this;
        each keeps its own names. `modem` is the back-office link's telemetry() ({} when
        it has none), None without a transport; `online`, `queued`, `dropped` are the
        transport's and its outbox's (False, 0, 0 without one)."""
        m = self.meter
        led = m.ledger
        ctl = m.control
        s = m.settings
        st = {
            "meter_id": s.meter_id,
            "settings": self.settings_source,
            "stamp": m.clock.stamp(),
            "balance": led.balance,
            "debt": led.debt,
            "credited": led.credited,
            "recovered": led.recovered,
            "credit_status": ctl.credit_status(),
            "control_state": ctl.control_state,
            "open_reasons": ctl.open_reasons,
            "relay": self.board.relay.closed,
            "power_w": getattr(self.board.source, "power_w", 0),
            # energy the metering chip's driver knows it lost, Wh (docs/metering.md)
            "meter_lost_wh": getattr(self.board.source, "lost_wh", 0),
            "energy_wh": led.energy_wh,
            "price": m.price_now(),
            "tariff_next_from": s.raw.get("tariff_next_from") or None,
            "postpaid": s.postpaid,
            "cmd_id": self.cmd_id,
            "errors": self.errors,
            "late_ms_max": self.late_ms_max,
            "ticks": self.ticks,
            "boots": self.boots,
            "online": False,
            "queued": 0,
            "dropped": 0,
            "modem": None,
        }
        comms = self.comms
        if comms is not None:
            st["online"] = comms.online
            st["queued"] = len(comms.outbox)
            st["dropped"] = comms.outbox.dropped
            link = comms.link
            st["modem"] = link.telemetry() if hasattr(link, "telemetry") else {}
        return st

    def fields(self):
        """The journal record now: every owner's fields put in their STATE_FIELDS places."""
        out = [0] * len(STATE_FIELDS)
        for at, values in (
            (_AT_M, self.meter.snapshot()),
            (_AT_I, self.intake.to_fields()),
            (_AT_A, (self.boots, self.cmd_id)),
        ):
            for k in range(len(at)):
                out[at[k]] = values[k]
        return tuple(out)

    def save(self):
        self.board.store.save(self.fields())
        self.boots_saved = True
        self._saved_charged = self.meter.ledger.charged
        self._saved_at = self.board.clock.ticks_ms()
        self._persist_flag.clear()

    # -- tasks --------------------------------------------------------------------
    async def metering_task(self):
        clk = self.board.clock
        last = clk.ticks_ms()
        while True:
            await clk.sleep_ms(self.tick_ms)
            now = clk.ticks_ms()
            late = clk.ticks_diff(now, last) - self.tick_ms
            if late > self.late_ms_max:
                self.late_ms_max = late
            try:
                self.step(clk.ticks_diff(now, last))
            except Exception as e:  # a bad reading must not stop billing
                self.report_error("metering", e)
            last = now

    async def relay_task(self):
        relay = self.board.relay
        while True:
            await self._relay_flag.wait()
            self._relay_flag.clear()
            if self.relay_hold:
                continue  # the test's end asks again (request_relay)
            want = self.meter.relay_closed()
            if relay.closed is want:
                continue
            try:
                self.save()  # the journal knows the command before the coil moves
                await relay.drive(want)
            except Exception as e:
                self.report_error("relay", e)
                self.meter.log.emit(
                    self.meter.clock.stamp(), ev.RELAY_FAULT, self.meter.ledger.balance, 0
                )
                await self.board.clock.sleep_ms(1000)
            self._relay_flag.set()  # re-check: the wish may have changed meanwhile

    async def persist_task(self):
        while True:
            await self._persist_flag.wait()
            try:
                self.save()
            except Exception as e:
                self.report_error("persist", e)
                await self.board.clock.sleep_ms(1000)

    async def watchdog_task(self):
        """Feeds the watchdog while the metering task makes progress: a stalled loop or a
        metering task that stopped ticking is reset by the hardware, not hidden."""
        clk = self.board.clock
        period = max(self.watchdog_ms // 4, self.tick_ms * 2)
        seen = self.ticks
        self.watchdog.feed()
        while True:
            await clk.sleep_ms(period)
            if self.ticks != seen:
                seen = self.ticks
                self.watchdog.feed()

    async def entry_task(self):
        """Drops a keypad line the customer left (once a second: no hurry)."""
        while True:
            await self.board.clock.sleep_ms(1000)
            self.entry.expire()

    def tasks(self):
        """The meter's tasks as coroutines, each under `_supervise`.

        The relay and persist flags are made afresh, set as they were, for the loop the
        tasks run in (CPython binds an Event to its first loop; a host test may run one
        App in several loops)."""
        self._relay_flag = _fresh(self._relay_flag)
        self._persist_flag = _fresh(self._persist_flag)
        sv = self._supervise
        out = [
            sv("metering", self.metering_task),
            sv("relay", self.relay_task),
            sv("persist", self.persist_task),
        ]
        if self.entry is not None:
            keypad = self.board.keypad
            out += [sv("keypad", lambda: keypad.run(self.entry.key)), sv("entry", self.entry_task)]
        if self.display is not None:
            out.append(sv("display", self.display.run))
        if self.watchdog is not None:
            out.append(sv("watchdog", self.watchdog_task))
        if self.board.indicator is not None:
            out.append(sv("indicator", self.board.indicator.run))
        if self.comms is not None:
            out += [sv("link", self.comms.link.run), sv("comms", self.comms.run)]
        return out + [sv("task", t) for t in self.extra_tasks]

    async def _supervise(self, name, task):
        """Run `task` (a function that makes the coroutine, or a coroutine); an exception
        it lets out is counted and logged and, when it can be made again, the task starts
        again a second later. A task that returns is done."""
        while True:
            again = callable(task)
            try:
                await (task() if again else task)
                return
            except Exception as e:
                self.report_error(name, e)
            if not again:
                return  # a coroutine object cannot start again
            await self.board.clock.sleep_ms(1000)

    async def run(self):
        await asyncio.gather(*[asyncio.create_task(t) for t in self.tasks()])

    def _listener_error(self, exc):
        self.report_error("event listener", exc)

    def report_error(self, where, exc):
        """A task's or listener's fault (metering, relay, persist, comms...): counted in
        `errors` (the state and tech.status() show it) and printed, at most one line per
        ERROR_LOG_MS (the next line says how many were not printed); the task goes on."""
        self.errors += 1
        clk = self.board.clock
        now = clk.ticks_ms()
        last = self._err_logged_at
        if last is not None and clk.ticks_diff(now, last) < ERROR_LOG_MS:
            self._err_unlogged += 1
            return
        self._err_logged_at = now
        more = self._err_unlogged
        self._err_unlogged = 0
        tail = " (and " + str(more) + " more not printed)" if more else ""
        self.error_write("app: " + where + " error: " + repr(exc) + tail + "\n")
