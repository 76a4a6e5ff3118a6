"""ATM90E26 single-phase energy metering IC over SPI: access, start-up, readings, energy.

Wiring (4-wire SPI, USEL low): SCLK, SDI (MOSI), SDO (MISO), CS on a GPIO; the bus in
SPI mode 3 at 100-125 kHz (the datasheet allows 160 kbit/s):

    spi = SPI(2, baudrate=115200, polarity=1, phase=1, sck=Pin(18), mosi=Pin(23),
              miso=Pin(19))
    chip = ATM90E26(spi, Pin(5, Pin.OUT, value=1))
    chip.begin()
    chip.poll()            # every second: chip.mwh, chip.power_w

Every access is one CS window with one 3-byte transfer (so a GC pause cannot split it
past the chip's 6 ms timeout) and is verified against LastData (06H): after reading a
register the driver reads LastData; on a mismatch it reads LastData once more and takes
whichever value two reads agree on, never re-reading the register itself (the energy
registers clear on read). Writes are checked the same way.

`poll()` is the metering tick's read: health (FuncEn still as configured, no checksum
error in SysStatus), forward and reverse active energy, mean power. Energy is read-clear
in 0.1 CF pulses and accumulated into integer mWh with the remainder carried, so nothing
is lost between reads or counted twice. Faults are reported through `on_event(kind,
detail)` and recovered: a chip that reset or flags a checksum error is reset and
reloaded; a dead bus (all ones or all zeros), a LastData mismatch that will not settle
or an energy jump beyond what `max_w` could draw in the elapsed time is discarded and
counted. `poll()` allocates nothing when the chip is healthy.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests

    def const(x):
        return x


import time

# Registers (datasheet Table-10)
_SOFTRESET = const(0x00)
_SYSSTATUS = const(0x01)
_FUNCEN = const(0x02)
_SAGTH = const(0x03)
_SMALLPMOD = const(0x04)
_LASTDATA = const(0x06)
_CALSTART = const(0x20)
_CS1 = const(0x2C)
_ADJSTART = const(0x30)
_CS2 = const(0x3B)
_APENERGY = const(0x40)
_ANENERGY = const(0x41)
_ENSTATUS = const(0x46)
_IRMS = const(0x48)
_URMS = const(0x49)
_PMEAN = const(0x4A)
_QMEAN = const(0x4B)
_FREQ = const(0x4C)
_POWERF = const(0x4D)
_PANGLE = const(0x4E)
_SMEAN = const(0x4F)
_IRMS2 = const(0x68)
_PMEAN2 = const(0x6A)

_RESET_CODE = const(0x789A)
_START_UNCHECKED = const(0x5678)
_START_CHECKED = const(0x8765)
_IDLE = const(0x6886)
_FUNCEN_RESET = const(0x000C)
_CALERR = const(0xC000)
_ADJERR = const(0x3000)
_LNCHANGE = const(0x0080)
_REVPCHG = const(0x0020)
_ENSTATUS_LLINE = const(0x0800)
_ENSTATUS_REVP = const(0x1000)
_LASTDATA_TRIES = const(3)  # LastData reads after a mismatch before a read is given up
_ENERGY_TRIES = const(5)  # ... and before an energy read is given up (three must agree)
_BUS_HIGH = const(0xFFFF)  # what every read returns from a bus stuck high

# Metering calibration block 21H..2BH and measurement block 31H..3AH, in address order.
METERING = (
    ("PLconstH", 0x21, 0x0015),
    ("PLconstL", 0x22, 0xD174),
    ("Lgain", 0x23, 0x0000),
    ("Lphi", 0x24, 0x0000),
    ("Ngain", 0x25, 0x0000),
    ("Nphi", 0x26, 0x0000),
    ("PStartTh", 0x27, 0x08BD),
    ("PNolTh", 0x28, 0x0000),
    ("QStartTh", 0x29, 0x0AEC),
    ("QNolTh", 0x2A, 0x0000),
    ("MMode", 0x2B, 0x9422),
)
MEASUREMENT = (
    ("Ugain", 0x31, 0x6720),
    ("IgainL", 0x32, 0x7A13),
    ("IgainN", 0x33, 0x7530),
    ("Uoffset", 0x34, 0x0000),
    ("IoffsetL", 0x35, 0x0000),
    ("IoffsetN", 0x36, 0x0000),
    ("PoffsetL", 0x37, 0x0000),
    ("QoffsetL", 0x38, 0x0000),
    ("PoffsetN", 0x39, 0x0000),
    ("QoffsetN", 0x3A, 0x0000),
)
OTHER = (("FuncEn", _FUNCEN, 0x0030), ("SagTh", _SAGTH, 0x17DD))
READINGS = (
    ("SysStatus", _SYSSTATUS),
    ("EnStatus", _ENSTATUS),
    ("Urms", _URMS),
    ("Irms", _IRMS),
    ("Irms2", _IRMS2),
    ("Pmean", _PMEAN),
    ("Pmean2", _PMEAN2),
    ("Qmean", _QMEAN),
    ("Smean", _SMEAN),
    ("PowerF", _POWERF),
    ("Pangle", _PANGLE),
    ("Freq", _FREQ),
    ("CalStart", _CALSTART),
    ("AdjStart", _ADJSTART),
    ("CS1", _CS1),
    ("CS2", _CS2),
)

# Event kinds reported through on_event(kind, detail)
EV_ABSENT = "meter_chip_absent"
EV_RESET = "meter_chip_reset"
EV_CHECKSUM = "meter_checksum_error"
EV_LASTDATA = "meter_lastdata_mismatch"
EV_JUMP = "meter_energy_jump"
EV_RANGE = "meter_reading_out_of_range"
EV_TAMPER = "tamper_neutral"
EV_REVERSE = "reverse_energy"
EV_RECOVERED = "meter_recovered"


class ChipError(Exception):
    pass


def checksum(values):
    """CS1/CS2 of a block of 16-bit register values: low byte = sum of the bytes mod 256,
    high byte = XOR of the bytes (datasheet p.33)."""
    s = 0
    x = 0
    for v in values:
        h = (v >> 8) & 0xFF
        lo = v & 0xFF
        s += h + lo
        x ^= h ^ lo
    return (x << 8) | (s & 0xFF)


def signed16(v):
    return v - 0x10000 if v & 0x8000 else v


def sign_magnitude(v):
    return -(v & 0x7FFF) if v & 0x8000 else v


def defaults():
    """The calibration this driver loads when given none: datasheet defaults,
    FuncEn 0030H (sag detection on WarnOut) and SagTh 17DDH."""
    cal = {}
    for block in (METERING, MEASUREMENT, OTHER):
        for name, _, value in block:
            cal[name] = value
    return cal


def validate(cal):
    """Full calibration dict from a partial one; ValueError naming the register."""
    full = defaults()
    for name in cal:
        if name not in full:
            raise ValueError("calibration." + name + ": unknown register")
        v = cal[name]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
            raise ValueError("calibration." + name + ": expected 0..65535, got " + repr(v))
        full[name] = v
    if full["Ugain"] & 0x8000:
        raise ValueError("calibration.Ugain: bit 15 must be 0 (datasheet)")
    if (full["PLconstH"] << 16 | full["PLconstL"]) == 0:
        raise ValueError("calibration.PLconst: must not be zero")
    return full


class ATM90E26:
    def __init__(self, spi, cs, calibration=None, mc=3200, max_w=30000, clock=None):
        self.spi = spi
        self.cs = cs
        self.cal = validate(calibration or {})
        self.mc = mc  # meter constant (imp/kWh) the calibration gives
        self.max_w = max_w  # the most the installation can draw: bound on energy jumps
        self.clock = clock  # ticks_ms/ticks_diff; None: time module
        self.on_event = None
        self._tx = bytearray(3)
        self._rx = bytearray(3)
        self.transfers = 0
        self.ok = False
        self.started = False  # False: never started; None: lost; True: running
        self.last_error = ""
        self.faults = 0
        self.reinits = 0
        # lifetime forward (import) and reverse (export) energy as Wh + mWh, so the
        # counters stay 31-bit small ints on the ESP32 (no allocation in poll())
        self.fwd_wh = 0
        self._fwd_m = 0
        self.rev_wh = 0
        self._rev_m = 0
        self._fwd_rem = 0  # raw x 100000 remainders below one mWh (modulo mc)
        self._rev_rem = 0
        self.mwh = 0  # forward energy read by the last poll (what the meter bills)
        self.power_w = 0
        self.line_n = False  # anti-tamper: the chip meters the neutral line
        self.reverse = False
        self._lnchange = False
        self._last_ms = None  # when the energy registers were last emptied (read, reset)
        self._bad = 0  # consecutive failed polls
        # forward energy the driver knows it lost, estimated (see `_lose`), as Wh + mWh,
        # and the cases: energy reads rejected (they emptied the register) and resets
        self.lost_wh = 0
        self._lost_m = 0
        self.lost_reads = 0
        self.lost_resets = 0
        self._p_est = 0  # the mean power last read, W: what a loss is estimated at

    # -- bus access ---------------------------------------------------------------
    def _xfer(self, b0, value):
        tx = self._tx
        rx = self._rx
        tx[0] = b0
        tx[1] = value >> 8
        tx[2] = value & 0xFF
        self.cs(0)
        try:
            self.spi.write_readinto(tx, rx)
        finally:
            self.cs(1)
        self.transfers += 1
        return (rx[1] << 8) | rx[2]

    def read(self, addr):
        """Read a register, verified against LastData; ChipError if it never agrees.

        On a mismatch LastData (which a read leaves alone) is read up to
        `_LASTDATA_TRIES` times more, until one value has come twice."""
        v = self._xfer(0x80 | addr, 0)
        last = self._xfer(0x80 | _LASTDATA, 0)
        if last == v:
            return v
        self._event(EV_LASTDATA, addr)
        older = -1
        for _ in range(_LASTDATA_TRIES):
            again = self._xfer(0x80 | _LASTDATA, 0)
            if again == v or again == last or again == older:
                return again
            older = last
            last = again
        raise ChipError("LastData does not settle reading %02XH" % addr)

    def _read_energy(self, addr):
        """A read-clear energy register, billed only on three samples that agree, so two
        identical bit errors cannot bill energy that never flowed: read() (two agree) and
        one LastData read more. When that one differs, LastData is read up to
        `_ENERGY_TRIES` times more: one more sample of the value read() gave, or three
        LastData reads in a row that agree, settle it. ChipError if nothing does."""
        v = self.read(addr)
        x = self._xfer(0x80 | _LASTDATA, 0)
        if x == v:
            return v
        self._event(EV_LASTDATA, addr)
        run = 1  # LastData reads in a row that gave x
        for _ in range(_ENERGY_TRIES):
            y = self._xfer(0x80 | _LASTDATA, 0)
            if y == v:
                return v
            if y == x:
                run += 1
                if run == 3:
                    return x
            else:
                x = y
                run = 1
        raise ChipError("LastData does not confirm reading %02XH" % addr)

    def write(self, addr, value, tries=3):
        for _ in range(tries):
            self._xfer(addr & 0x7F, value)
            if self._xfer(0x80 | _LASTDATA, 0) == value:
                return
        raise ChipError("write %02XH=%04XH not confirmed by LastData" % (addr, value))

    # -- start-up -----------------------------------------------------------------
    def begin(self):
        """Reset, prove the chip is there, load the calibration, check the checksums."""
        self.ok = False
        self._xfer(_SOFTRESET, _RESET_CODE)
        time.sleep_ms(5) if hasattr(time, "sleep_ms") else time.sleep(0.005)
        funcen = self.read(_FUNCEN)
        calstart = self.read(_CALSTART)
        if funcen != _FUNCEN_RESET or calstart != _IDLE:
            # all ones / all zeros / anything else: no chip answering with its reset values
            raise ChipError(
                "no ATM90E26 answering (FuncEn %04XH CalStart %04XH)" % (funcen, calstart)
            )
        if self._last_ms is not None:  # a restart: the reset emptied the registers
            self.lost_resets += 1
            self._lose()
        cal = self.cal
        self.write(_FUNCEN, cal["FuncEn"])
        self.write(_SAGTH, cal["SagTh"])
        self.write(_SMALLPMOD, 0)
        self._load_block(_CALSTART, METERING, _CS1)
        self._load_block(_ADJSTART, MEASUREMENT, _CS2)
        self.write(_CALSTART, _START_CHECKED)
        self.write(_ADJSTART, _START_CHECKED)
        status = self.read(_SYSSTATUS)
        if status & (_CALERR | _ADJERR):
            raise ChipError(
                "checksum rejected: SysStatus %04XH, chip CS1 %04XH CS2 %04XH"
                % (status, self.read(_CS1), self.read(_CS2))
            )
        self._last_ms = self._now()
        self.ok = True
        self.started = True  # a later recover() is a recovery, also after a bare begin()

    def _load_block(self, start_reg, block, cs_reg):
        cal = self.cal
        self.write(start_reg, _START_UNCHECKED)  # resets the block to its defaults
        values = []
        for name, addr, _ in block:
            self.write(addr, cal[name])
            values.append(cal[name])
        cs = checksum(values)
        chip = self.read(cs_reg)  # the chip's own computation over what it holds
        if chip != cs:
            raise ChipError("%s block not held: CS %04XH, chip %04XH" % (block[0][0], cs, chip))
        self.write(cs_reg, cs)

    def start(self):
        """Start metering at boot (the app calls it once); False if the chip is absent:
        `poll()` keeps trying."""
        return self.recover()

    def recover(self):
        """Start the chip, or reset and reload it after a fault; True when it runs."""
        first = not self.reinits and self.started is False
        if not first:
            self.reinits += 1
        try:
            if first or not self._resume():
                self.begin()
        except (ChipError, OSError) as e:
            self.last_error = str(e)
            if first:  # absent at start-up (a later loss was reported by the poll)
                self._event(EV_ABSENT, 0)
            self.started = None
            return False
        if not first:
            self._event(EV_RECOVERED, self.reinits)
        self.started = True
        return True

    def _resume(self):
        """After a bus fault: carry on without a reset if the chip kept its setup.

        The chip meters on while the bus is down; a reset would throw away the energy
        its registers hold, so it is reset only when its configuration is gone.
        """
        if self.read(_FUNCEN) != self.cal["FuncEn"]:
            return False
        if self.read(_CALSTART) != _START_CHECKED or self.read(_ADJSTART) != _START_CHECKED:
            return False
        if self.read(_SYSSTATUS) & (_CALERR | _ADJERR):
            return False
        self.ok = True
        return True

    # -- the metering tick ------------------------------------------------------
    def poll(self):
        """Read energy and power since the last poll into .mwh / .power_w."""
        self.mwh = 0
        now = self._now()
        if not self.ok:
            self.power_w = 0
            if not self.recover():
                return
        try:
            if not self._healthy():
                self.power_w = 0
                self.recover()
                return
            power = signed16(self.read(_PMEAN))
            en = self.read(_ENSTATUS)
        except ChipError:
            self._failed()
            return
        self._p_est = power if power > 0 else 0
        # The read-clear energy last, forward first, each billed once it is good: a read
        # that fails after it cannot throw it away.
        limit = self._max_raw(self._diff(now, self._last_ms))
        try:
            fwd = self._read_energy(_APENERGY)
        except ChipError:  # the read emptied the register: its energy is gone
            self._failed()
            self._lost_read()
            return
        if fwd > limit:
            # never bill what could not flow: a dead bus reads FFFFH = 6553.5 pulses
            self.faults += 1
            self._event(EV_JUMP, fwd)
            if fwd != _BUS_HIGH:  # a bus stuck high never reached the chip: unread
                self._lost_read()
            return
        self._last_ms = now
        try:
            rev = self._read_energy(_ANENERGY)
        except ChipError:  # reverse energy is not billed: only counted as a fault
            self._failed()
            rev = 0
        if rev > limit:
            self.faults += 1
            self._event(EV_JUMP, rev)
            rev = 0
        self._bad = 0
        if fwd:
            acc = self._fwd_rem + fwd * 100000
            q = acc // self.mc
            self._fwd_rem = acc - q * self.mc
            m = self._fwd_m + q
            if m >= 1000:
                self.fwd_wh += m // 1000
                m %= 1000
            self._fwd_m = m
            self.mwh = q
        if rev:
            acc = self._rev_rem + rev * 100000
            q = acc // self.mc
            self._rev_rem = acc - q * self.mc
            m = self._rev_m + q
            if m >= 1000:
                self.rev_wh += m // 1000
                m %= 1000
            self._rev_m = m
            if not self.reverse:
                self.reverse = True
                self._event(EV_REVERSE, q)
        elif self.reverse and not en & _ENSTATUS_REVP:
            self.reverse = False
        line_n = not en & _ENSTATUS_LLINE
        if line_n != self.line_n:  # read once more: two equal bit errors are no tamper
            try:
                line_n = not self.read(_ENSTATUS) & _ENSTATUS_LLINE
            except ChipError:
                line_n = self.line_n
        if line_n != self.line_n:
            self.line_n = line_n
            if line_n:
                self._event(EV_TAMPER, 1)
        elif self._lnchange and not line_n:
            self._event(EV_TAMPER, 0)  # to N and back to L between two polls
        self.power_w = power if power > 0 else 0

    def _failed(self):
        """A read of this poll did not settle."""
        self.faults += 1
        self.power_w = 0
        self._bad += 1
        if self._bad >= 3:  # a bus that stays bad: start over
            self.ok = False

    def _lost_read(self):
        self.lost_reads += 1
        self._lose()

    def _lose(self):
        """The energy registers were emptied without being billed (a rejected energy read,
        a reset): count the energy metered since they were last emptied, estimated as the
        last good mean power over that time (at most `max_w`), as lost; from now on."""
        now = self._now()
        if self._last_ms is not None:
            ms = self._diff(now, self._last_ms)
            p = self._p_est if self._p_est < self.max_w else self.max_w
            if ms > 0 and p:
                m = self._lost_m + p * ms // 3600
                self.lost_wh += m // 1000
                self._lost_m = m % 1000
        self._last_ms = now

    def _healthy(self):
        funcen = self.read(_FUNCEN)
        if funcen != self.cal["FuncEn"]:
            funcen = self.read(_FUNCEN)  # once more: two identical bit errors are no reset
        if funcen != self.cal["FuncEn"]:
            self.faults += 1
            if funcen == 0xFFFF or funcen == 0:
                self._event(EV_ABSENT, funcen)
            else:
                self._event(EV_RESET, funcen)
            return False
        status = self.read(_SYSSTATUS)
        if status & (_CALERR | _ADJERR | _LNCHANGE) and self._xfer(0x80 | _LASTDATA, 0) != status:
            # a flag two equal bit errors could have made, not confirmed by a third sample:
            # ignored (read-clear; a checksum error raises its flag again at the next poll)
            status = 0
        if status & (_CALERR | _ADJERR):
            self.faults += 1
            self._event(EV_CHECKSUM, status)
            return False
        self._lnchange = bool(status & _LNCHANGE)  # judged once EnStatus is read
        return True

    def _max_raw(self, dt_ms):
        # raw LSB = 0.1 pulse; max_w for dt_ms, 50 % margin plus two LSB of slack
        if dt_ms < 0:
            dt_ms = 0
        mwh = self.max_w * (dt_ms + 1000) // 3600  # at least a second's worth
        return mwh * 3 // 2 * self.mc // 100000 + 2

    @property
    def fwd_mwh(self):
        """Lifetime forward energy in mWh (a long int past 1073 kWh: not for the tick)."""
        return self.fwd_wh * 1000 + self._fwd_m

    @property
    def rev_mwh(self):
        return self.rev_wh * 1000 + self._rev_m

    @property
    def lost_mwh(self):
        """Forward energy the driver knows it lost, estimated, mWh (not billed)."""
        return self.lost_wh * 1000 + self._lost_m

    def calibration_for(self, **refs):
        """A new calibration dict from reference readings (drivers/atm90e26_cal.py
        calibrate's keywords); validated, not loaded: set .cal and begin() to use it."""
        from drivers.atm90e26_cal import calibrate

        return calibrate(self.cal, **refs)

    # -- readings -----------------------------------------------------------------
    def readings(self):
        """Scaled instantaneous values (integers in the units named); allocates."""
        r = {
            "urms_cv": self.read(_URMS),  # 0.01 V
            "irms_ma": self.read(_IRMS),
            "irms_n_ma": self.read(_IRMS2),
            "p_w": signed16(self.read(_PMEAN)),
            "p_n_w": signed16(self.read(_PMEAN2)),
            "q_var": signed16(self.read(_QMEAN)),
            "s_va": self.read(_SMEAN) & 0x7FFF,
            "pf_milli": sign_magnitude(self.read(_POWERF)),
            "angle_decideg": sign_magnitude(self.read(_PANGLE)),
            "freq_chz": self.read(_FREQ),
        }
        bad = []
        if abs(r["pf_milli"]) > 1000:
            bad.append("pf")
        if abs(r["angle_decideg"]) > 1800:
            bad.append("angle")
        if r["urms_cv"] > 5000 and not 4500 <= r["freq_chz"] <= 6500:
            bad.append("freq")
        if r["urms_cv"] == 0xFFFF:
            bad.append("urms")
        if bad:
            self._event(EV_RANGE, len(bad))
        r["out_of_range"] = bad
        return r

    def registers(self):
        """Every configured and reading register by name (for technicians)."""
        out = {}
        for block in (OTHER, METERING, MEASUREMENT):
            for name, addr, _ in block:
                out[name] = self.read(addr)
        for name, addr in READINGS:
            if name != "SysStatus":  # read-clear: leave its flags to poll()
                out[name] = self.read(addr)
        return out

    # -- helpers -----------------------------------------------------------------
    def _event(self, kind, detail):
        if self.on_event is not None:
            self.on_event(kind, detail)

    def _now(self):
        if self.clock is not None:
            return self.clock.ticks_ms()
        return time.ticks_ms()

    def _diff(self, a, b):
        if self.clock is not None:
            return self.clock.ticks_diff(a, b)
        return time.ticks_diff(a, b)
