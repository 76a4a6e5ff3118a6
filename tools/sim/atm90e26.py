"""Host model of the ATM90E26 single-phase metering IC, seen from its SPI pins.

Runs under CPython and MicroPython. The driver gets `model.spi` (a machine.SPI
look-alike) and `model.cs` (a machine.Pin output look-alike) and talks to the model
byte by byte exactly as to the chip; the test or simulation sets the analog world
with `set_load()` and reads the ground truth back.

    m = ATM90E26Model(clock, mc=3200, mmd=0)   # clock.now: virtual ms
    m.set_load(230.0, 10.0, pf=1.0)            # amps_n=, freq=, reverse=, lead=
    m.true_wh_forward                          # what the energy registers sum to

Attributes and hooks:
- analog front end: `u_error`, `il_error`, `in_error` (fractional gain errors),
  `phase_error_deg` (L), `phase_error_n_deg` (N), `design_pga_l`/`design_pga_n`.
- faults: `absent` (None | 'high' | 'low': MISO stuck, writes never arrive),
  `miso_flip(n=1, bit=None)`, `noise_every` (0, or SPI garbage: one MISO data byte in n
  on average gets one random bit flipped), `stall_next_ms(ms)`, `reset()` (brown-out),
  `corrupt(addr, value)` (ESD), `timeout_ms` (6), `rng_state` (seed of the flip bit
  choice); `noise_flips` counts the garbage flips.
- truth: `true_wh_forward`/`true_wh_reverse` (= pulses x 1000 / mc, what the energy
  registers sum to), `pulses_forward`/`pulses_reverse`, `true_varh_*`/`q_pulses_*`,
  `wh_lost_forward`/`wh_lost_reverse` (unread register energy killed by resets),
  `load_wh_forward`/`load_wh_reverse` (the L-line load's physical energy, V x I_L x pf,
  whether metered or not), `cf1_pulses`/`cf2_pulses`.
- statistics: `transfers` (CS windows), `reads` (complete), `writes` (committed),
  `partial_reads`, `discarded_writes`, `timeouts`, `resets`.
- state: `metering`, `measuring`, `irq`, `warnout`, `peek(addr)` (no side effects);
  `checksum(values)` is the CS1/CS2 function.

Analog world -> registers:
- Urms = V(1+u_error) Ugain/26400 (0.01 V), Irms = I_L(1+il_error) IgainL/31251,
  Irms2 = I_N(1+in_error) IgainN/30000 (1 mA); Pmean/Qmean/Smean from those with the
  angle acos(pf) + phase error (positive = current lags, pf < 0 or reverse=True adds
  180 deg); PowerF = P/S. Registers hold the value truncated to their unit and the LSB
  register (08H) the next 8 bits; they saturate at FFFFH / +-7FFFH / 7FFFH.
- Metered power = V(1+u_error) I(1+i_error) cos(angle + Lphi) x (1 + Lgain/32768) x
  PL_default/PL, at mc pulses per kWh; reactive likewise with sin (forward =
  inductive). Energy registers: 0.1 pulse per LSB, 16-bit wrap, read-clear; inside the
  0.01-pulse quantum forward and reverse cancel, the absolute registers add |E|.
- MMD pins (mmd): 0 anti-tamper, 1 fixed L, 2 L+N, 3 MMode.LNSel; EnStatus[1:0].

Bus (datasheet sections 4.1, Table-8):
- byte0 = R/W bit (1 = read) + 7-bit address, then 16 data bits MSB first, mode 3.
  Bytes only count while CS is low; with CS high MISO reads the idle level.
- A read's value is fixed when byte0 arrives and shifted out in bytes 1-2; its side
  effects (LastData, LSB latch, read-clear) happen once 24 clocks are complete, so a
  read with fewer clocks is partial and one with more completes from the first 24.
- A write commits on the CS rising edge only with exactly 24 clocks and no timeout.
- A gap of more than `timeout_ms` (6) between two bytes of a window aborts the access;
  the rest of that window is ignored (MISO idle). A write also dies if CS stays low
  for more than `timeout_ms` after its last byte (Table-8: timeout => no write); a
  read is complete once its 24 clocks are in.
- MISO idles at 0xFF (pull-up), or 0x00 when `absent == 'low'`.
- `spi.init()` records baudrate/polarity/phase/bits/firstbit; in any mode but 3 reads
  come back shifted one bit left with the MSB lost (writes still land, as a mode-0
  master presents MOSI before the rising edge too), so LastData exposes it.

Registers: the full map with power-on defaults, R/W, read-only and read-clear types,
invalid addresses (read 0000H, write dropped), SoftReset (789AH), CS1/CS2 read back
as the checksum the chip computes (low byte = sum of bytes, high byte = XOR),
CalStart/AdjStart commands (6886H idle, 5678H resets the block and runs unchecked,
8765H runs while the checksum matches, anything else is an error), PLconstH taking
effect when PLconstL is written.

Checks: at every access (CS window) the chip compares its checksums while in 8765H
and sets CalErr/AdjErr (11) while they differ; the check of a window that writes
CS1/CS2 runs after that write lands, so "covered register, then matching CS" passes
and anything else in between is caught. Errors and SagWarn re-assert after a
SysStatus read-clear for as long as their condition holds.

Modelling choices where the documents are silent:
- Writes to the calibration blocks are accepted whatever CalStart/AdjStart hold.
- Any 24-clock write updates LastData, also to read-only or invalid addresses
  (Table-8 keys on the clock count only); reading 00H returns 0000H.
- CalErr/AdjErr clear once the stored CS matches again (no reset needed).
- Ugain with bit 15 set is used as the unsigned number.
- PL_Constant = 0 stops pulses (and energy).
- Start-up power: 9.2 W (0.4 % of 230 V x 10 A) x PStartTh / 08BDH, compared with the
  front-end power (before Lgain and PL); reactive start-up likewise from QStartTh in
  var; no-load thresholds from PNolTh/QNolTh with the same scale. Pnoload is set
  while metering is off, cleared when |P| reaches the start-up power and set again
  when |P| falls below the no-load power (PNolTh 0: never), and nothing accumulates
  below the start-up power.
- Lgain/Ngain and PL scale reactive energy like active energy. Lphi/Nphi (sign +
  10-bit magnitude) shift the metering angle by Lphi / (3763.74 x sqrt(3)) rad
  (application note 3.2.4.3); measurement registers do not use them.
- The L/N PGA codes in MMode scale the current channel relative to the board's
  design gains `design_pga_l`/`design_pga_n` (default x1 = the MMode default).
- Offsets: Uoffset/IoffsetL/IoffsetN are ignored. PoffsetL/QoffsetL/PoffsetN/QoffsetN
  add to the mean powers (measurement only) in small-power units; SmallPMod = A987H
  reports Pmean/Qmean in small-power units (normal = small x Ugain x Igain /
  (100000 x 2^22)).
- Measurement values are instant (no averaging delay); Freq reads 0 below 1 V and is
  clamped to 45-65 Hz otherwise; PowerF/Pangle read 0 with no current. Pangle is the
  current lag in 0.1 deg, sign-magnitude, in (-180, 180].
- SagWarn compares the Ugain-scaled voltage with SagTh x 4 x Ugain / (32768 x 100 x
  sqrt(2)) volts (no one-cycle duration); it runs whatever AdjStart holds.
- CF pulses count per direction from the netted 0.01-pulse quanta (Amod/Rmod absolute:
  from the absolute quanta, RevP/RevQ then read 0).
- Anti-tamper compares the gain-applied |P| of L and N with the Pthresh hysteresis and
  picks the larger line when both lie between 1x and 8x the start-up power.
- Hardware attribute changes (u_error ...) apply from the next access; set_load()
  applies at its own instant. `absent` is a bus fault only: the chip keeps metering.
- The clock must not run backwards; energy is integrated lazily up to clock.now.
"""

import math

_PL_DEFAULT = 0x0015D174
_START_W = 9.2  # W at PStartTh = 08BDH: 0.4 % of Un x Ib for 230 V, 10 A
_START_REF = 0x08BD
_SQRT2 = math.sqrt(2.0)
_PHI_RAD = 1.0 / (3763.74 * math.sqrt(3.0))  # Lphi LSB in radians
_D2R = math.pi / 180.0
_SMALL_DIV = 100000.0 * 4194304.0  # 100000 x 2^22

_DEFAULTS = {
    0x02: 0x000C,
    0x03: 0x1D6A,
    0x20: 0x6886,
    0x21: 0x0015,
    0x22: 0xD174,
    0x27: 0x08BD,
    0x29: 0x0AEC,
    0x2B: 0x9422,
    0x30: 0x6886,
    0x31: 0x6720,
    0x32: 0x7A13,
    0x33: 0x7530,
}

_CS1_BLOCK = range(0x21, 0x2C)
_CS2_BLOCK = range(0x31, 0x3B)
_MEAS = (0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D, 0x4E, 0x4F, 0x68, 0x6A, 0x6B, 0x6D, 0x6E, 0x6F)
_LSB_REGS = (0x48, 0x49, 0x4A, 0x4B, 0x4F, 0x68, 0x6A, 0x6B, 0x6F)
_PLAIN_RW = (0x02, 0x03, 0x04)

_PGA_L = (4, 8, 16, 24, 1, 1, 1, 1)  # MMode bits 15:13
_PGA_N = (2, 4, 1, 1)  # MMode bits 12:11
_PTHRESH = (0.125, 0.0625, 0.03125, 0.015625) + tuple(i / 100.0 for i in range(1, 13))

_VALID = {0x00, 0x01, 0x02, 0x03, 0x04, 0x06, 0x08, 0x46}
_VALID.update(range(0x20, 0x2D))
_VALID.update(range(0x30, 0x3C))
_VALID.update(range(0x40, 0x46))
_VALID.update(_MEAS)


def checksum(values):
    """CS1/CS2 of 16-bit register values: low byte = sum of bytes, high byte = XOR."""
    s = 0
    x = 0
    for v in values:
        h = (v >> 8) & 0xFF
        l = v & 0xFF
        s += h + l
        x ^= h ^ l
    return ((x & 0xFF) << 8) | (s & 0xFF)


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _sm16(v):
    """Sign-magnitude with a 10-bit magnitude (Lphi/Nphi)."""
    m = v & 0x03FF
    return -m if v & 0x8000 else m


def _to_sm(x):
    """Signed float -> 16-bit sign-magnitude of round(|x|)."""
    m = int(abs(x) + 0.5)
    if m > 0x7FFF:
        m = 0x7FFF
    if x < 0 and m:
        m |= 0x8000
    return m


def _fix_u(x, hi):
    """Unsigned register value (register units) -> 32-bit reg:LSB, saturating at hi."""
    if not x > 0:
        return 0
    if x >= hi:
        return hi << 16
    v = int(x * 65536.0 + 0.5)
    return v if v < (hi << 16) else hi << 16


def _fix_s(x, lim=32767):
    if x >= lim:
        return lim << 16
    if x <= -lim:
        return -(lim << 16)
    return int(math.floor(x * 65536.0 + 0.5))


def _norm(th):
    while th > math.pi:
        th -= 2 * math.pi
    while th <= -math.pi:
        th += 2 * math.pi
    return th


class _CSPin:
    """Chip-select input as a machine.Pin output (0 = selected, idle high)."""

    def __init__(self, model):
        self._m = model
        self._v = 1

    def init(self, *args, **kw):
        if "value" in kw:
            self.value(kw["value"])

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if v:
                self._m._cs_rise()
            else:
                self._m._cs_fall()
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class _SPIBus:
    """machine.SPI look-alike wired to the model's SDI/SDO."""

    MSB = 0
    LSB = 1

    def __init__(self, model):
        self._m = model
        self.baudrate = None
        self.polarity = 1
        self.phase = 1
        self.bits = 8
        self.firstbit = 0
        self.inits = 0
        self.deinited = False

    def init(self, baudrate=None, polarity=None, phase=None, bits=None, firstbit=None, **kw):
        self.inits += 1
        self.deinited = False
        if baudrate is not None:
            self.baudrate = baudrate
        if polarity is not None:
            self.polarity = polarity
        if phase is not None:
            self.phase = phase
        if bits is not None:
            self.bits = bits
        if firstbit is not None:
            self.firstbit = firstbit

    def deinit(self):
        self.deinited = True

    def write(self, buf):
        byte = self._m._byte
        for b in buf:
            byte(b)
        return None

    def read(self, n, write=0x00):
        out = bytearray(n)
        self.readinto(out, write)
        return bytes(out)

    def readinto(self, buf, write=0x00):
        byte = self._m._byte
        for i in range(len(buf)):
            buf[i] = byte(write)
        return None

    def write_readinto(self, wbuf, rbuf):
        if len(wbuf) != len(rbuf):
            raise ValueError("buffers must be the same length")
        byte = self._m._byte
        for i in range(len(wbuf)):
            rbuf[i] = byte(wbuf[i])
        return None


class ATM90E26Model:
    def __init__(self, clock, mc=3200, mmd=0):
        self.clock = clock
        self.mc = mc
        self.mmd = mmd & 3
        self.timeout_ms = 6
        # analog front end imperfections (fractions / degrees)
        self.u_error = 0.0
        self.il_error = 0.0
        self.in_error = 0.0
        self.phase_error_deg = 0.0
        self.phase_error_n_deg = 0.0
        self.design_pga_l = 1
        self.design_pga_n = 1
        # faults
        self.absent = None
        self.rng_state = 0x2545F491
        self.noise_every = 0
        self.noise_flips = 0
        self._flips = []
        self._stall_next = 0
        # statistics
        self.transfers = 0
        self.reads = 0
        self.writes = 0
        self.partial_reads = 0
        self.discarded_writes = 0
        self.timeouts = 0
        self.resets = 0
        # ground truth (never reset by chip resets)
        self.pulses_forward = 0.0
        self.pulses_reverse = 0.0
        self.q_pulses_forward = 0.0
        self.q_pulses_reverse = 0.0
        self.pulses_lost_forward = 0.0
        self.pulses_lost_reverse = 0.0
        self.load_wh_forward = 0.0
        self.load_wh_reverse = 0.0
        self.cf1_pulses = 0
        self.cf2_pulses = 0
        # analog world
        self._v = 0.0
        self._il = 0.0
        self._in = 0.0
        self._freq = 50.0
        self._theta = 0.0
        self._load_w = 0.0
        # bus
        self.cs = _CSPin(self)
        self.spi = _SPIBus(self)
        self._sel = False
        self._nb = 0
        self._aborted = False
        self._last_ms = 0
        self._win_stall = 0
        self._check_due = False
        self._rd = False
        self._addr = 0
        self._rdval = 0
        self._rdtrue = 0
        self._wdata = 0
        self._key = None
        self._t = clock.now
        self._chip_defaults()

    # ---- ground truth -------------------------------------------------------------

    @property
    def true_wh_forward(self):
        return self.pulses_forward * 1000.0 / self.mc

    @property
    def true_wh_reverse(self):
        return self.pulses_reverse * 1000.0 / self.mc

    @property
    def true_varh_forward(self):
        return self.q_pulses_forward * 1000.0 / self.mc

    @property
    def true_varh_reverse(self):
        return self.q_pulses_reverse * 1000.0 / self.mc

    @property
    def wh_lost_forward(self):
        return self.pulses_lost_forward * 1000.0 / self.mc

    @property
    def wh_lost_reverse(self):
        return self.pulses_lost_reverse * 1000.0 / self.mc

    @property
    def metering(self):
        return self._met_on

    @property
    def measuring(self):
        return self._meas_on

    @property
    def irq(self):
        return 1 if self._r[0x01] else 0

    @property
    def warnout(self):
        s = self._r[0x01]
        return 1 if (s & 0xC000) or ((s & 0x0002) and (self._r[0x02] & 0x10)) else 0

    def peek(self, addr):
        """Register value as a read would return it, without any side effect."""
        return self._value(addr & 0x7F)

    # ---- analog world -------------------------------------------------------------

    def set_load(self, volts, amps, pf=1.0, amps_n=None, freq=50.0, reverse=False, lead=False):
        """Line voltage, L (and N) current and power factor from now on.

        pf < 0 or reverse=True: power flows back (export / reversed CT); lead=True:
        capacitive (current leads), else inductive lag.
        """
        if volts < 0 or amps < 0 or (amps_n is not None and amps_n < 0):
            raise ValueError("volts and amps must be >= 0")
        if pf > 1.0 or pf < -1.0:
            raise ValueError("pf must be within -1..1")
        self._advance()
        th = math.acos(abs(pf))
        if lead:
            th = -th
        if reverse or pf < 0:
            th += math.pi
        self._theta = _norm(th)
        self._v = float(volts)
        self._il = float(amps)
        self._in = float(amps if amps_n is None else amps_n)
        self._freq = float(freq)
        self._load_w = self._v * self._il * math.cos(self._theta)
        self._update()

    # ---- fault injection ----------------------------------------------------------

    def reset(self):
        """Spontaneous reset (brown-out, ESD, POR): every register back to default."""
        self._advance()
        self._chip_defaults()
        self._aborted = True

    def miso_flip(self, n=1, bit=None):
        """Flip one bit (random unless given) in each of the next n MISO data bytes."""
        for _ in range(n):
            self._flips.append(bit)

    def stall_next_ms(self, ms):
        """The bytes of the next access arrive ms apart (a GC pause, say)."""
        self._stall_next = ms

    def corrupt(self, addr, value):
        """Silently change a register (ESD); a covered one fails the next check."""
        self._advance()
        addr &= 0x7F
        value &= 0xFFFF
        if addr == 0x2C:
            self._cs1_w = value  # the stored checksum (a read shows the computed one)
        elif addr == 0x3B:
            self._cs2_w = value
        else:
            self._r[addr] = value
        self._update()

    def _rand(self):
        x = self.rng_state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.rng_state = x
        return x

    def _mixed(self):
        """24 well-mixed random bits (a multiplying output over _rand: successive
        draws independent enough that two flips in a row are not the same bit)."""
        return ((self._rand() * 0x9E3779B1) & 0xFFFFFFFF) >> 8

    # ---- chip state ---------------------------------------------------------------

    def _chip_defaults(self):
        if getattr(self, "_en", None) is not None:
            # energy held in the registers (and below their LSB) dies with the reset
            self.resets += 1
            res = self._res[0]
            fwd = self._en[0] * 10 + self._en_sub[0] + (res if res > 0 else 0.0)
            rev = self._en[1] * 10 + self._en_sub[1] + (-res if res < 0 else 0.0)
            self.pulses_lost_forward += fwd / 100.0
            self.pulses_lost_reverse += rev / 100.0
        r = [0] * 128
        for a, v in _DEFAULTS.items():
            r[a] = v
        self._r = r
        self._last = 0
        self._cs1_w = 0
        self._cs2_w = 0
        self._pl_h = _DEFAULTS[0x21]
        self._en = [0] * 6
        self._en_sub = [0] * 6
        self._res = [0.0, 0.0]  # netted residual in 0.01-pulse units (active, reactive)
        self._ares = [0.0, 0.0]  # absolute residual
        self._cf_f = [0, 0]
        self._cf_r = [0, 0]
        self._cf_a = [0, 0]
        self._rev = [0, 0]
        self._meas = {}
        for a in _MEAS:
            self._meas[a] = 0
        self._met_on = False
        self._meas_on = False
        self._line = 0  # 0 = L, 1 = N
        self._pnoload = True
        self._qnoload = True
        self._sag = False
        self._rate = [0.0, 0.0]
        self._update()

    def _pl(self):
        return (self._pl_h << 16) | self._r[0x22]

    def _cs1(self):
        r = self._r
        return checksum([r[a] for a in _CS1_BLOCK])

    def _cs2(self):
        r = self._r
        return checksum([r[a] for a in _CS2_BLOCK])

    def _enstatus(self):
        v = self.mmd
        if self._qnoload:
            v |= 0x8000
        if self._pnoload:
            v |= 0x4000
        mm = self._r[0x2B]
        if self._rev[1] and not mm & 0x40:
            v |= 0x2000
        if self._rev[0] and not mm & 0x80:
            v |= 0x1000
        if self._line == 0:
            v |= 0x0800
        return v

    def _value(self, a):
        if a not in _VALID or a == 0x00:
            return 0
        if a == 0x06:
            return self._last
        if a == 0x2C:
            return self._cs1()
        if a == 0x3B:
            return self._cs2()
        if 0x40 <= a <= 0x45:
            return self._en[a - 0x40]
        if a == 0x46:
            return self._enstatus()
        if a in self._meas:
            return (self._meas[a] >> 16) & 0xFFFF
        return self._r[a]

    def _check(self):
        """The chip's periodic checksum / command / sag check."""
        r = self._r
        c = r[0x20]
        if c == 0x5678:
            met, err = True, False
        elif c == 0x8765:
            err = self._cs1() != self._cs1_w
            met = not err
        else:
            met, err = False, c != 0x6886
        if err:
            r[0x01] |= 0xC000
        c = r[0x30]
        if c == 0x5678:
            meas, aerr = True, False
        elif c == 0x8765:
            aerr = self._cs2() != self._cs2_w
            meas = not aerr
        else:
            meas, aerr = False, c != 0x6886
        if aerr:
            r[0x01] |= 0x3000
        if met != self._met_on or meas != self._meas_on:
            self._met_on = met
            self._meas_on = meas
            self._update()
        if self._sag and r[0x02] & 0x20:
            r[0x01] |= 0x0002

    def _update(self):
        """Recompute measurement registers, metering rates and flags."""
        r = self._r
        va = self._v * (1.0 + self.u_error)
        mm = r[0x2B]
        il = self._il * (1.0 + self.il_error) * _PGA_L[mm >> 13] / self.design_pga_l
        inn = self._in * (1.0 + self.in_error) * _PGA_N[(mm >> 11) & 3] / self.design_pga_n
        thl = self._theta + self.phase_error_deg * _D2R
        thn = self._theta + self.phase_error_n_deg * _D2R
        ugain = r[0x31]
        vm = va * ugain / 26400.0
        self._sag = vm < r[0x03] * 4.0 * ugain / (32768.0 * 100.0 * _SQRT2)
        if self._sag and r[0x02] & 0x20:
            r[0x01] |= 0x0002
        if self._meas_on:
            self._measure(vm, il * r[0x32] / 31251.0, inn * r[0x33] / 30000.0, thl, thn)
        if self._met_on:
            self._meter_state(va, il, inn, thl, thn)
        else:
            self._pnoload = True
            self._qnoload = True
            self._rate[0] = 0.0
            self._rate[1] = 0.0

    def _measure(self, vm, iml, imn, thl, thn):
        m = self._meas
        m[0x49] = _fix_u(vm * 100.0, 0xFFFF)
        if vm >= 1.0:
            f = self._freq
            f = 45.0 if f < 45.0 else (65.0 if f > 65.0 else f)
            m[0x4C] = int(f * 100.0 + 0.5) << 16
        else:
            m[0x4C] = 0
        r = self._r
        small = r[0x04] == 0xA987
        self._line_meas(0x48, vm, iml, thl, r[0x37], r[0x38], r[0x32], small)
        self._line_meas(0x68, vm, imn, thn, r[0x39], r[0x3A], r[0x33], small)

    def _line_meas(self, base, vm, i, th, poff, qoff, igain, small):
        # base 48H: Irms 48, Pmean 4A, Qmean 4B, PowerF 4D, Pangle 4E, Smean 4F (N: +20H)
        m = self._meas
        m[base] = _fix_u(i * 1000.0, 0xFFFF)
        s = vm * i
        k = self._r[0x31] * igain / _SMALL_DIV  # W per small-power unit
        p = s * math.cos(th) + _s16(poff) * k
        q = s * math.sin(th) + _s16(qoff) * k
        if small:
            m[base + 2] = _fix_s(p / k) if k else 0
            m[base + 3] = _fix_s(q / k) if k else 0
        else:
            m[base + 2] = _fix_s(p)
            m[base + 3] = _fix_s(q)
        m[base + 7] = _fix_u(s, 0x7FFF)
        if s > 0 and i > 0:
            pf = p / s
            pf = 1.0 if pf > 1.0 else (-1.0 if pf < -1.0 else pf)
            m[base + 5] = _to_sm(pf * 1000.0) << 16
            m[base + 6] = _to_sm(_norm(th) * 1800.0 / math.pi) << 16
        else:
            m[base + 5] = 0
            m[base + 6] = 0

    def _meter_state(self, va, il, inn, thl, thn):
        r = self._r
        kl = 1.0 + _s16(r[0x23]) / 32768.0
        kn = 1.0 + _s16(r[0x25]) / 32768.0
        phl = thl + _sm16(r[0x24]) * _PHI_RAD
        phn = thn + _sm16(r[0x26]) * _PHI_RAD
        sl = va * il
        sn = va * inn
        pl = sl * math.cos(phl)
        ql = sl * math.sin(phl)
        pn = sn * math.cos(phn)
        qn = sn * math.sin(phn)
        start = _START_W * r[0x27] / _START_REF
        mmd = self.mmd
        if mmd == 0:
            ml = abs(pl * kl)
            mn = abs(pn * kn)
            thr = _PTHRESH[r[0x2B] & 0x0F]
            old = self._line
            if start <= abs(pl) < 8 * start and start <= abs(pn) < 8 * start:
                line = 0 if ml >= mn else 1
            elif old == 0:
                line = 1 if mn - ml > thr * ml else 0
            else:
                line = 0 if ml - mn > thr * mn else 1
            if line != old:
                self._line = line
                r[0x01] |= 0x0080
        elif mmd == 3:
            self._line = 0 if r[0x2B] & 0x0400 else 1
        else:
            self._line = 0
        if mmd == 2:
            pf_ = pl + pn
            qf_ = ql + qn
            pm = pl * kl + pn * kn
            qm = ql * kl + qn * kn
        elif self._line == 0:
            pf_, qf_, pm, qm = pl, ql, pl * kl, ql * kl
        else:
            pf_, qf_, pm, qm = pn, qn, pn * kn, qn * kn
        plc = self._pl()
        scale = _PL_DEFAULT * self.mc * 100.0 / (plc * 3.6e9) if plc else 0.0
        # centi-pulses per ms
        ap = abs(pf_)
        if ap >= start:
            self._pnoload = False
        elif ap < _START_W * r[0x28] / _START_REF:
            self._pnoload = True
        self._rate[0] = pm * scale if (not self._pnoload and ap >= start) else 0.0
        qstart = _START_W * r[0x29] / _START_REF
        aq = abs(qf_)
        if aq >= qstart:
            self._qnoload = False
        elif aq < _START_W * r[0x2A] / _START_REF:
            self._qnoload = True
        self._rate[1] = qm * scale if (not self._qnoload and aq >= qstart) else 0.0

    def _advance(self):
        """Integrate energy from the previous instant up to clock.now."""
        now = self.clock.now
        dt = now - self._t
        if dt <= 0:
            return
        self._t = now
        if self._load_w:
            wh = self._load_w * dt / 3600000.0
            if wh > 0:
                self.load_wh_forward += wh
            else:
                self.load_wh_reverse -= wh
        for k in (0, 1):
            rate = self._rate[k]
            if rate:
                self._meter(k, rate * dt)

    def _add(self, i, n):
        t = self._en_sub[i] + n
        self._en[i] = (self._en[i] + t // 10) & 0xFFFF
        self._en_sub[i] = t % 10

    def _meter(self, k, dc):
        """Add dc centi-pulses (signed) to active (k=0) or reactive (k=1) energy."""
        if dc > 0:
            if k:
                self.q_pulses_forward += dc / 100.0
            else:
                self.pulses_forward += dc / 100.0
        elif k:
            self.q_pulses_reverse -= dc / 100.0
        else:
            self.pulses_reverse -= dc / 100.0
        x = self._res[k] + dc
        n = int(x)
        self._res[k] = x - n
        a = self._ares[k] + abs(dc)
        na = int(a)
        self._ares[k] = a - na
        base = 3 * k
        if n > 0:
            self._add(base, n)
        elif n < 0:
            self._add(base + 1, -n)
        if na:
            self._add(base + 2, na)
        absolute = self._r[0x2B] & (0x40 if k else 0x80)
        if absolute:
            c = self._cf_a[k] + na
            self._cf_a[k] = c % 100
            self._pulses(k, c // 100, None)
        elif n > 0:
            c = self._cf_f[k] + n
            self._cf_f[k] = c % 100
            self._pulses(k, c // 100, 0)
        elif n < 0:
            c = self._cf_r[k] - n
            self._cf_r[k] = c % 100
            self._pulses(k, c // 100, 1)

    def _pulses(self, k, count, rev):
        if not count:
            return
        if k:
            self.cf2_pulses += count
        else:
            self.cf1_pulses += count
        if rev is None:
            return
        if rev != self._rev[k]:
            self._rev[k] = rev
            if self._r[0x02] & (0x08 if k else 0x04):
                self._r[0x01] |= 0x40 if k else 0x20

    # ---- register writes ----------------------------------------------------------

    def _write(self, a, v):
        r = self._r
        self._last = v
        if a == 0x00:
            if v == 0x789A:
                self._chip_defaults()
            return
        if a in _PLAIN_RW:
            r[a] = v
        elif a == 0x20 or a == 0x30:
            r[a] = v
            if v == 0x5678:
                for b in _CS1_BLOCK if a == 0x20 else _CS2_BLOCK:
                    r[b] = _DEFAULTS.get(b, 0)
                if a == 0x20:
                    self._pl_h = _DEFAULTS[0x21]
            self._check()
        elif 0x21 <= a <= 0x2B or 0x31 <= a <= 0x3A:
            r[a] = v
            if a == 0x22:
                self._pl_h = r[0x21]
        elif a == 0x2C:
            self._cs1_w = v
        elif a == 0x3B:
            self._cs2_w = v
        else:
            return  # read-only or unimplemented: dropped
        self._update()

    # ---- SPI slave ----------------------------------------------------------------

    def _idle(self):
        return 0x00 if self.absent == "low" else 0xFF

    def _cs_fall(self):
        self._sel = True
        self.transfers += 1
        self._nb = 0
        self._aborted = False
        self._win_stall = self._stall_next
        self._stall_next = 0
        self._check_due = False
        if self.absent:
            return
        self._advance()
        key = (
            self.u_error,
            self.il_error,
            self.in_error,
            self.phase_error_deg,
            self.phase_error_n_deg,
            self.design_pga_l,
            self.design_pga_n,
            self.mc,
            self.mmd,
        )
        if key != self._key:
            self._key = key
            self.mmd &= 3
            self._update()
        self._check_due = True

    def _cs_rise(self):
        self._sel = False
        if self.absent:
            return
        self._advance()
        if not self._rd and self._nb > 0 and not self._aborted:
            if self.clock.now - self._last_ms > self.timeout_ms:
                # SCLK idle for 6 ms with CS still low: timeout, no write (Table-8)
                self.timeouts += 1
                self.discarded_writes += 1
            elif self._nb == 3:
                self.writes += 1
                self._write(self._addr, self._wdata)
            else:
                self.discarded_writes += 1
        elif self._rd and 0 < self._nb < 3 and not self._aborted:
            self.partial_reads += 1
        if self._check_due:
            self._check_due = False
            self._check()

    def _byte(self, mosi):
        if not self._sel:
            return self._idle()
        if self.absent:
            return 0xFF if self.absent != "low" else 0x00
        if self._aborted:
            return self._idle()
        now = self.clock.now
        i = self._nb
        if i > 0:
            gap = now - self._last_ms
            if self._win_stall > gap:
                gap = self._win_stall
            if gap > self.timeout_ms:
                self._aborted = True
                self.timeouts += 1
                if self._rd and i < 3:
                    self.partial_reads += 1
                elif not self._rd:
                    self.discarded_writes += 1
                return self._idle()
        self._last_ms = now
        self._nb = i + 1
        if i == 0:
            self._rd = bool(mosi & 0x80)
            self._addr = mosi & 0x7F
            self._wdata = 0
            if self._check_due and (self._rd or self._addr not in (0x2C, 0x3B)):
                self._check_due = False
                self._check()
            if self._rd:
                v = self._value(self._addr)
                self._rdtrue = v
                if self.spi.polarity != 1 or self.spi.phase != 1:
                    v = (v << 1) & 0xFFFF
                self._rdval = v
            return self._idle()
        if not self._rd:
            if i < 3:
                self._wdata = (self._wdata << 8) | (mosi & 0xFF)
            return self._idle()
        if i > 2:
            return self._idle()
        out = (self._rdval >> 8) if i == 1 else (self._rdval & 0xFF)
        if self._flips:
            bit = self._flips.pop(0)
            if bit is None:
                bit = self._rand() & 7
            out ^= 1 << bit
        if self.noise_every:
            r = self._mixed()
            if (r >> 3) % self.noise_every == 0:
                self.noise_flips += 1
                out ^= 1 << (r & 7)
        if i == 2:
            self._complete_read(self._addr)
        return out

    def _complete_read(self, a):
        self.reads += 1
        v = self._rdtrue
        if a != 0x06:
            self._last = v
        if a in _LSB_REGS:
            self._r[0x08] = self._meas[a] & 0xFF00
        if a == 0x01:
            self._r[0x01] = 0
        elif 0x40 <= a <= 0x45:
            self._en[a - 0x40] = 0
