"""Power cuts at every flash write of a metering workload (portable; the acceptance test
of the journal).

The workload runs the real App on the simulated board with the journal on the NOR flash
model: consumption saves, a low-credit crossing, a disconnect at zero, two top-ups and
the reconnect. A clean run counts its flash operations; then for every operation, and
at several byte offsets inside it, the same workload runs again with the power cut
there, the meter reboots on the same flash and relay, and the test checks:
- the journal's state is exactly the last record whose save completed (or the one being
  saved, when its last byte made it): never an older one, never a mix;
- no accepted top-up lost, none credited twice;
- the consumption the cut loses is within the bound the write policy promises;
- the reboot does not move the relay, and the meter carries on billing and crediting.
"""

import asyncio
import gc

import support
from firmware.billing import policy
from firmware.tokens import keys
from firmware.storage import record
from firmware.app import App
from firmware.app import STATE_FIELDS
from firmware.billing.settings import Settings
from tools.sim.board import SimBoard
from tools.sim import commission
from tools.sim.nor import NorFlash, PowerCut

REC = record.STATE.size
# bytes done before the cut: none, some, all but the last, all (a record's program
# ends there; an erase goes on to 4095)
OFFSETS = (0, 30, REC - 1, REC, 4095)
CREDITED = STATE_FIELDS.index("credited")
CHARGED = STATE_FIELDS.index("charged")
CONTROL = STATE_FIELDS.index("control_state")
WATTS = 3000
PRICE = 20000  # 2.0000 per kWh in the tariff's 1/100 minor units per kWh
TOPUPS = ((700, 30), (760, 20))  # (at_s, amount in minor units)
END_S = 900
METER_ID = 4711002
KEY = keys.MeterKey(keys.derive_meter_key(bytes(range(32)), METER_ID))  # top-ups are tokens
SETTINGS = {
    "meter_id": str(METER_ID),
    "tariff": {"type": "flat", "price_per_kwh": "2.0000"},
    "low_credit": "0.50",
    "reconnect_min": "0.20",
    "persist_money": "0.01",
    "persist_min_s": 20,
}
# The write policy's promise: a consumption save is due once the unsaved charge reaches
# persist_money and persist_min_s have passed, so at most the larger of the two is
# unsaved, plus the tick in progress (and one unit of rounding).


def _charge(seconds):
    """Charge in minor units for `seconds` at WATTS (rounded up)."""
    return -(-WATTS * seconds * PRICE // (3600 * 100 * 1000))


BOUND = max(1, _charge(20)) + _charge(1) + 1


class Recorder:
    """Wraps the journal: which saves completed, which one was in flight."""

    def __init__(self, store):
        self.store = store
        self.done = []
        self.inflight = None

    def load(self):
        return self.store.load()

    def save(self, fields):
        self.inflight = tuple(fields)
        self.store.save(fields)
        self.done.append(self.inflight)
        self.inflight = None

    def erase(self):
        self.store.erase()

    @property
    def saves(self):
        return self.store.saves


_FLASH = []


def _board():
    """A board on a blank 2-sector flash (one chip reused: a small heap stays whole)."""
    if not _FLASH:
        _FLASH.append(NorFlash(2))
    flash = _FLASH[0]
    flash.reset()
    settings = Settings(SETTINGS)
    board = SimBoard((2026, 1, 5, 12 * 3600), None, settings, meter="ideal", flash=flash)
    return board, settings


def _boot(board, settings):
    asyncio.new_event_loop()
    board.store = Recorder(board.store)
    return App(board, settings, key=KEY)


def _run(board, app, until_s):
    async def go():
        for t in app.tasks():
            asyncio.create_task(t)
        await board.clock.run(until_s * 1000)

    asyncio.run(go())


def _workload(cut=None):
    """Run the workload; returns (board, settings, app, accepted, inflight_amount, cut_hit)."""
    board, settings = _board()
    app = _boot(board, settings)
    commission.open_account(app.meter, 100)
    app.save()
    board.base_ops = board.flash.ops  # the workload's operations start here
    board.mains.set_watts(WATTS)
    accepted = []
    pending = [0]
    board.app = app  # the running meter: a reboot replaces it

    def topup(amount):
        pending[0] = amount
        support.topup(board.app, amount)
        accepted.append(amount)
        pending[0] = 0

    for at_s, amount in TOPUPS:
        board.clock.at(at_s * 1000, lambda a=amount: topup(a), hold=True)
    if cut is not None:
        board.flash.cut(*cut)
    try:
        _run(board, app, END_S)
    except PowerCut:
        return board, settings, app, accepted, pending[0], True
    return board, settings, app, accepted, 0, False


def test_workload_exercises_every_kind_of_save():
    board, settings, app, accepted, _, _ = _workload()
    m = app.meter
    assert accepted == [a for _, a in TOPUPS]
    kinds = [e[1] for e in m.log.last(100)]
    for kind in ("low_credit", "disconnect", "topup", "reconnect"):
        assert kind in kinds, kinds
    assert board.relay_model.closed and m.control.control_state == policy.CONNECTED
    assert board.flash.erases[0] >= 2 and board.flash.erases[1] >= 1  # laps the ring
    assert m.ledger.credited == 50
    assert 40 <= board.store.saves <= 80


def test_cut_at_every_flash_operation_and_inside_it():
    clean, _, _, _, _, _ = _workload()
    total_ops = clean.flash.ops
    cases = 0
    for op in range(clean.base_ops, total_ops):
        for at in OFFSETS:
            gc.collect()
            board, settings, dead, accepted, inflight_amount, hit = _workload((op, at))
            assert hit, (op, at)
            rec = board.store
            ram = dead.meter.snapshot()
            relay_at_cut = board.relay_model.closed
            # the power goes, comes back 5 s later, the meter boots on the same hardware
            board.power_cut()
            board.clock.outage(board.clock.now + 5000)
            board.power_on()
            board.boot()
            app = board.app = _boot(board, settings)
            got = rec.load()
            ok = [rec.done[-1]]
            if rec.inflight is not None:
                ok.append(rec.inflight)
            assert got in ok, (op, at)
            committed_inflight = rec.inflight is not None and got == rec.inflight
            # top-ups: every accepted one is in, the one in flight at most once
            want = sum(accepted)
            if committed_inflight:
                want += inflight_amount
            assert got[CREDITED] == want, (op, at, got[CREDITED], want)
            assert app.meter.ledger.credited == want
            # what the cut lost is within the promised bound
            lost = ram[CHARGED] - got[CHARGED]
            assert 0 <= lost <= BOUND, (op, at, lost, BOUND)
            # the reboot re-asserts the journaled relay state; it never flips it
            want_closed = got[CONTROL] == policy.CONNECTED
            assert relay_at_cut == want_closed or rec.inflight is not None, (op, at)
            left = END_S + 300
            _run(board, app, left)
            assert board.relay_model.closed == app.meter.relay_closed(), (op, at)
            assert app.errors == 0
            # the meter carries on: a top-up after the reboot is credited once
            before = app.meter.ledger.credited
            support.topup(app, 77)
            assert app.meter.ledger.credited == before + 77
            assert rec.load()[CREDITED] == before + 77
            cases += 1
    assert cases == (total_ops - clean.base_ops) * len(OFFSETS) and cases > 200
