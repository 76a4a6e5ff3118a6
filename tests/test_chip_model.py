"""Portable tests of tools/sim/atm90e26.py, the ATM90E26 model, driven by raw SPI frames.

Every access goes through model.cs / model.spi exactly as a driver's would: CS low, the
bytes, CS high. Time is a fake clock whose `now` (ms) the tests move by hand.
"""

import math

import support
from tools.sim.atm90e26 import ATM90E26Model

SYSSTATUS = 0x01
FUNCEN = 0x02
SAGTH = 0x03
LASTDATA = 0x06
LSB = 0x08
CALSTART = 0x20
PLCONSTH = 0x21
PLCONSTL = 0x22
LGAIN = 0x23
LPHI = 0x24
PSTARTTH = 0x27
PNOLTH = 0x28
MMODE = 0x2B
CS1 = 0x2C
ADJSTART = 0x30
UGAIN = 0x31
IGAINL = 0x32
CS2 = 0x3B
APENERGY = 0x40
ANENERGY = 0x41
ATENERGY = 0x42
RPENERGY = 0x43
ENSTATUS = 0x46
IRMS = 0x48
URMS = 0x49
PMEAN = 0x4A
QMEAN = 0x4B
FREQ = 0x4C
POWERF = 0x4D
PANGLE = 0x4E
SMEAN = 0x4F
IRMS2 = 0x68
PMEAN2 = 0x6A

HOUR = 3600 * 1000
CAL_DEFAULTS = [0x0015, 0xD174, 0, 0, 0, 0, 0x08BD, 0, 0x0AEC, 0, 0x9422]
ADJ_DEFAULTS = [0x6720, 0x7A13, 0x7530, 0, 0, 0, 0, 0, 0, 0]


class Clock:
    def __init__(self):
        self.now = 0


def make(mmd=0, mc=3200):
    clk = Clock()
    return clk, ATM90E26Model(clk, mc=mc, mmd=mmd)


def frame(m, out):
    """One CS window: clock out the bytes `out`, return the bytes seen on MISO."""
    buf = bytearray(len(out))
    m.cs(0)
    m.spi.write_readinto(bytes(out), buf)
    m.cs(1)
    return buf


def read(m, addr):
    buf = frame(m, [addr | 0x80, 0, 0])
    return (buf[1] << 8) | buf[2]


def write(m, addr, value):
    frame(m, [addr & 0x7F, (value >> 8) & 0xFF, value & 0xFF])


def s16(v):
    return v - 0x10000 if v & 0x8000 else v


def cs_of(values):
    """Datasheet checksum, computed independently of the model."""
    total = 0
    x = 0
    for v in values:
        total += (v >> 8) + (v & 0xFF)
        x ^= (v >> 8) ^ (v & 0xFF)
    return (x << 8) | (total & 0xFF)


def start(m, cal=None, adj=None, funcen=None, cs1=None):
    """The canonical init: 5678H, block, CS, ... 8765H (cal/adj: {addr: value})."""
    if funcen is not None:
        write(m, FUNCEN, funcen)
    block = list(CAL_DEFAULTS)
    write(m, CALSTART, 0x5678)
    for a, v in sorted((cal or {}).items()):
        write(m, a, v)
        block[a - 0x21] = v
    write(m, CS1, cs_of(block) if cs1 is None else cs1)
    block = list(ADJ_DEFAULTS)
    write(m, ADJSTART, 0x5678)
    for a, v in sorted((adj or {}).items()):
        write(m, a, v)
        block[a - 0x31] = v
    write(m, CS2, cs_of(block))
    write(m, CALSTART, 0x8765)
    write(m, ADJSTART, 0x8765)


def run(clk, m, ms, addr=APENERGY, step=60000):
    """Advance ms of virtual time reading (and summing) a read-clear register every step."""
    total = 0
    while ms > 0:
        dt = step if ms > step else ms
        clk.now += dt
        ms -= dt
        total += read(m, addr)
    return total


# ---- register file --------------------------------------------------------------------


def test_power_on_defaults_and_checksum_vectors():
    _, m = make()
    expect = {
        0x00: 0,
        SYSSTATUS: 0,
        FUNCEN: 0x000C,
        SAGTH: 0x1D6A,
        0x04: 0,
        CALSTART: 0x6886,
        PLCONSTH: 0x0015,
        PLCONSTL: 0xD174,
        PSTARTTH: 0x08BD,
        0x29: 0x0AEC,
        MMODE: 0x9422,
        CS1: 0x55CB,
        ADJSTART: 0x6886,
        UGAIN: 0x6720,
        IGAINL: 0x7A13,
        0x33: 0x7530,
        CS2: 0x6BB9,
        ENSTATUS: 0xC800,
    }
    for a, v in expect.items():
        assert read(m, a) == v, hex(a)
    for a in (LGAIN, LPHI, 0x25, 0x26, PNOLTH, 0x2A, 0x34, 0x3A, LSB):
        assert read(m, a) == 0, hex(a)
    for a in range(0x40, 0x46):
        assert read(m, a) == 0
    for a in (IRMS, URMS, PMEAN, QMEAN, FREQ, POWERF, PANGLE, SMEAN, IRMS2, PMEAN2, 0x6F):
        assert read(m, a) == 0
    # the independent checksum agrees with the datasheet vectors
    assert cs_of(CAL_DEFAULTS) == 0x55CB and cs_of(ADJ_DEFAULTS) == 0x6BB9


def test_checksum_vectors_of_the_spec_table():
    cal_vectors = (
        ([0x0015, 0xD174, 0x1D39, 0, 0, 0, 0x08BD, 0, 0x0AEC, 0, 0x9422], 0x7121),
        ([0x00B9, 0xC1F3, 0x1D39, 0, 0, 0, 0x08BD, 0, 0x0AEC, 0, 0x9422], 0x4A34),
        ([0x0015, 0xD174, 0x1475, 0x0024, 0, 0, 0x08BD, 0, 0x0AEC, 0, 0x7C22], 0xF860),
    )
    adj_vectors = (
        ([0xD464, 0x6E49, 0x7530] + [0] * 7, 0xD294),
        ([0x890F, 0x6E49, 0x7530] + [0] * 7, 0xE4F4),
        ([0x5C3B, 0x5AA7, 0x7530] + [0] * 7, 0xDF3D),
        (ADJ_DEFAULTS, 0x6BB9),
    )
    _, m = make()
    write(m, CALSTART, 0x5678)
    for values, expect in cal_vectors:
        for i, v in enumerate(values):
            write(m, 0x21 + i, v)
        assert read(m, CS1) == expect
        assert cs_of(values) == expect
    write(m, ADJSTART, 0x5678)
    for values, expect in adj_vectors:
        for i, v in enumerate(values):
            write(m, 0x31 + i, v)
        assert read(m, CS2) == expect
    # CS readback is the computed value, never the written one
    write(m, CS2, 0x1234)
    assert read(m, CS2) == 0x6BB9


def test_enstatus_mirrors_the_mode_pins():
    for mmd in range(4):
        _, m = make(mmd=mmd)
        assert read(m, ENSTATUS) == 0xC800 | mmd


def test_lastdata_follows_reads_and_writes():
    clk, m = make()
    assert read(m, FUNCEN) == 0x000C
    assert read(m, LASTDATA) == 0x000C
    assert read(m, LASTDATA) == 0x000C  # reading LastData leaves it
    write(m, SAGTH, 0x1F2F)
    assert read(m, LASTDATA) == 0x1F2F
    assert read(m, SAGTH) == 0x1F2F
    # read-clear: LastData keeps the value that was shifted out
    write(m, CALSTART, 0x1234)  # invalid command: CalErr
    assert read(m, SYSSTATUS) == 0xC000
    assert read(m, LASTDATA) == 0xC000
    # a write to a read-only register is dropped but LastData still takes it
    write(m, URMS, 0x4321)
    assert read(m, LASTDATA) == 0x4321
    assert read(m, URMS) == 0


def test_invalid_addresses_read_zero_and_drop_writes():
    _, m = make()
    for a in (0x05, 0x07, 0x09, 0x1F, 0x2D, 0x3C, 0x47, 0x50, 0x67, 0x69, 0x6C, 0x70, 0x7F):
        write(m, a, 0xBEEF)
        assert read(m, LASTDATA) == 0xBEEF
        assert read(m, a) == 0, hex(a)
        assert read(m, LASTDATA) == 0  # a normal read of 0000H


def test_softreset_restores_every_default():
    clk, m = make(mmd=1)
    start(m, cal={LGAIN: 0x1D39}, funcen=0x0030)
    m.set_load(230.0, 10.0)
    clk.now += 60000
    assert read(m, URMS) == 23000
    write(m, 0x00, 0x1234)  # not the magic value: nothing happens
    assert read(m, FUNCEN) == 0x0030
    clk.now += 60000
    write(m, 0x00, 0x789A)
    assert read(m, FUNCEN) == 0x000C
    assert read(m, CALSTART) == 0x6886 and read(m, ADJSTART) == 0x6886
    assert read(m, LGAIN) == 0 and read(m, CS1) == 0x55CB
    assert read(m, APENERGY) == 0
    assert read(m, ENSTATUS) == 0xC801
    assert read(m, URMS) == 0
    assert read(m, SYSSTATUS) == 0
    assert m.resets == 1
    assert run(clk, m, 600000) == 0  # metering stays off until the host re-initializes
    # two minutes of unread energy, with the +22.8 % metering gain
    assert abs(m.wh_lost_forward - 2300 / 30.0 * (1 + 0x1D39 / 32768.0)) < 0.05


def test_reset_hook_restores_defaults_and_loses_energy():
    clk, m = make()
    start(m, funcen=0x0030)
    m.set_load(230.0, 10.0)
    assert run(clk, m, 60000) > 0
    clk.now += 30000
    m.reset()
    assert m.wh_lost_forward > 19.0  # the half minute the host had not read yet
    assert read(m, FUNCEN) == 0x000C
    assert read(m, CALSTART) == 0x6886
    assert read(m, ENSTATUS) == 0xC800
    assert read(m, URMS) == 0 and read(m, CS1) == 0x55CB and read(m, CS2) == 0x6BB9
    assert run(clk, m, 120000) == 0
    assert read(m, SYSSTATUS) == 0


# ---- framing faults ---------------------------------------------------------------------


def test_writes_need_exactly_24_clocks():
    _, m = make()
    write(m, SAGTH, 0x1111)
    frame(m, [FUNCEN, 0x00])  # 16 clocks
    assert read(m, FUNCEN) == 0x000C
    write(m, SAGTH, 0x2222)
    frame(m, [FUNCEN, 0x00, 0x30, 0x00])  # 32 clocks
    assert read(m, FUNCEN) == 0x000C
    frame(m, [SAGTH, 0x33])
    assert read(m, LASTDATA) == 0x000C  # LastData untouched by the dropped writes
    assert m.discarded_writes == 3
    write(m, FUNCEN, 0x0030)
    assert read(m, FUNCEN) == 0x0030


def test_partial_read_has_no_side_effects():
    clk, m = make()
    start(m)
    m.set_load(230.0, 10.0)
    clk.now += 600000  # 2300 W x 10 min = 383.3 Wh = 1226.7 pulses
    write(m, FUNCEN, 0x0030)
    buf = frame(m, [APENERGY | 0x80, 0])  # 16 clocks: only the high byte
    assert read(m, LASTDATA) == 0x0030  # no LastData update
    v = read(m, APENERGY)  # not cleared by the partial read
    assert buf[1] == v >> 8
    assert abs(v - 12267) <= 1
    assert read(m, LASTDATA) == v
    assert m.partial_reads == 1


def test_read_with_32_clocks_completes_from_the_first_24():
    _, m = make()
    buf = frame(m, [FUNCEN | 0x80, 0, 0, 0])
    assert buf[0] == 0xFF and buf[1] == 0x00 and buf[2] == 0x0C and buf[3] == 0xFF
    assert read(m, LASTDATA) == 0x000C


def test_cs_high_bytes_are_ignored():
    _, m = make()
    buf = bytearray(3)
    m.spi.write_readinto(bytes([FUNCEN, 0x00, 0x30]), buf)  # CS never lowered
    assert bytes(buf) == b"\xff\xff\xff"
    assert m.spi.read(2) == b"\xff\xff"
    assert read(m, FUNCEN) == 0x000C
    assert m.transfers == 1


def test_split_transfers_and_a_6ms_stall():
    clk, m = make()
    # address and data as separate calls, as whatnick's drivers do: fine within 6 ms
    m.cs(0)
    m.spi.write(bytes([FUNCEN]))
    clk.now += 6
    m.spi.write(bytes([0x00, 0x30]))
    m.cs(1)
    assert read(m, FUNCEN) == 0x0030
    m.cs(0)
    m.spi.write(bytes([SAGTH]))
    clk.now += 7  # a GC pause: the chip times out
    m.spi.write(bytes([0x1F, 0x2F]))
    m.cs(1)
    assert read(m, SAGTH) == 0x1D6A
    m.cs(0)
    m.spi.write(bytes([FUNCEN | 0x80]))
    hi = m.spi.read(1)
    lo = m.spi.read(1)
    m.cs(1)
    assert hi == b"\x00" and lo == b"\x30"
    assert m.timeouts == 1


def test_cs_held_low_after_a_write_times_it_out():
    clk, m = make()
    m.cs(0)
    m.spi.write(bytes([FUNCEN, 0x00, 0x30]))
    clk.now += 7  # SCLK idle 7 ms before CS rises: Table-8 "timeout: no write"
    m.cs(1)
    assert read(m, FUNCEN) == 0x000C
    # a read is complete after its 24 clocks
    buf = bytearray(3)
    m.cs(0)
    m.spi.write_readinto(bytes([SAGTH | 0x80, 0, 0]), buf)
    clk.now += 7
    m.cs(1)
    assert buf[1] == 0x1D and buf[2] == 0x6A
    assert read(m, LASTDATA) == 0x1D6A


def test_stall_next_ms_aborts_the_next_access_only():
    clk, m = make()
    m.stall_next_ms(7)
    write(m, FUNCEN, 0x0030)
    assert read(m, FUNCEN) == 0x000C
    m.stall_next_ms(6)
    write(m, FUNCEN, 0x0030)
    assert read(m, FUNCEN) == 0x0030
    # a stalled read is partial: a read-clear register keeps its value
    write(m, CALSTART, 0x1111)
    m.stall_next_ms(50)
    buf = frame(m, [SYSSTATUS | 0x80, 0, 0])
    assert buf[1] == 0xFF and buf[2] == 0xFF
    assert read(m, LASTDATA) == 0x1111
    assert read(m, SYSSTATUS) == 0xC002  # CalErr, and a sag as no mains is applied
    assert m.timeouts == 2


# ---- CalStart / AdjStart ----------------------------------------------------------------


def test_calstart_adjstart_state_machine():
    clk, m = make()
    m.set_load(230.0, 10.0)
    # 6886H: idle, no error, nothing measured or metered
    clk.now += 60000
    assert read(m, SYSSTATUS) == 0 and read(m, URMS) == 0 and read(m, APENERGY) == 0
    # 5678H resets the block and runs without a check
    write(m, CALSTART, 0x5678)
    write(m, LGAIN, 0x1D39)
    assert read(m, LGAIN) == 0x1D39
    write(m, CALSTART, 0x5678)
    assert read(m, LGAIN) == 0
    write(m, ADJSTART, 0x5678)
    write(m, UGAIN, 0x5000)
    write(m, ADJSTART, 0x5678)
    assert read(m, UGAIN) == 0x6720
    assert read(m, URMS) == 23000
    assert abs(run(clk, m, 60000) - 1226.7) <= 1  # 2300 W for a minute at 3200 imp/kWh
    assert read(m, SYSSTATUS) == 0
    # 8765H with CS1 never written (0000H): CalErr, metering stops
    write(m, CALSTART, 0x8765)
    assert read(m, SYSSTATUS) == 0xC000
    assert run(clk, m, 60000) == 0
    # the error re-asserts after every clearing read while it persists
    assert read(m, SYSSTATUS) == 0xC000
    assert read(m, SYSSTATUS) == 0xC000
    # the right CS1 clears the condition
    write(m, CS1, 0x55CB)  # checked right after it lands: no error
    assert read(m, SYSSTATUS) == 0
    assert abs(run(clk, m, 60000) - 1226.7) <= 1
    # any other command value is an error too; 6886H is quiet
    write(m, ADJSTART, 0x1234)
    assert read(m, SYSSTATUS) == 0x3000
    write(m, ADJSTART, 0x6886)
    assert read(m, SYSSTATUS) == 0x3000
    assert read(m, SYSSTATUS) == 0
    write(m, CALSTART, 0x6886)
    assert run(clk, m, 60000) == 0
    assert read(m, SYSSTATUS) == 0
    assert read(m, ENSTATUS) == 0xC800


def test_wrong_cs1_measures_but_meters_nothing():
    # whatnick/ATM90E26_Arduino#10: Lphi changed, CS1 not: SysStatus C002, EnStatus C801,
    # V/I/P fine, energy registers stay 0
    clk, m = make(mmd=1)
    m.set_load(118.0, 1.35, pf=0.99)
    start(m, funcen=0x0030)
    assert read(m, SYSSTATUS) == 0x0002  # sag: 118 V is below the 171.6 V default
    write(m, LPHI, 0x0010)
    assert read(m, SYSSTATUS) == 0xC002  # the next access is a checked one
    assert read(m, ENSTATUS) == 0xC801
    assert read(m, URMS) == 11800
    assert read(m, IRMS) == 1350
    assert s16(read(m, PMEAN)) == 157  # 157.7 W: the register truncates, LSB has the rest
    assert run(clk, m, HOUR, step=10000) == 0
    assert read(m, SYSSTATUS) == 0xC002
    assert m.true_wh_forward == 0.0
    # fix the checksum: metering resumes
    block = list(CAL_DEFAULTS)
    block[LPHI - 0x21] = 0x0010
    write(m, CS1, cs_of(block))
    read(m, SYSSTATUS)
    assert read(m, SYSSTATUS) == 0x0002
    assert run(clk, m, HOUR, step=10000) > 0


def test_wrong_cs2_stops_measurement_only():
    clk, m = make()
    m.set_load(230.0, 10.0)
    write(m, CALSTART, 0x5678)
    write(m, CS1, 0x55CB)
    write(m, ADJSTART, 0x5678)
    write(m, UGAIN, 0x6000)
    write(m, CS2, 0x6BB9)  # stale
    write(m, CALSTART, 0x8765)
    write(m, ADJSTART, 0x8765)
    assert read(m, SYSSTATUS) == 0x3000
    assert read(m, URMS) == 21410  # measured while 5678H ran unchecked, then frozen
    m.set_load(200.0, 5.0)
    assert read(m, URMS) == 21410 and read(m, IRMS) == 10000
    m.set_load(230.0, 10.0)
    assert abs(run(clk, m, 60000) - 1226.7) <= 1


def test_covered_register_change_is_caught_at_the_next_access():
    clk, m = make()
    start(m)
    m.set_load(230.0, 10.0)
    assert read(m, SYSSTATUS) == 0
    # a covered register followed by its matching CS write passes
    block = list(CAL_DEFAULTS)
    block[LPHI - 0x21] = 0x0024
    write(m, LPHI, 0x0024)
    write(m, CS1, cs_of(block))
    assert read(m, SYSSTATUS) == 0
    # ... any other access in between is a checked one
    block[LGAIN - 0x21] = 0x0100
    write(m, LGAIN, 0x0100)
    read(m, FUNCEN)
    write(m, CS1, cs_of(block))
    assert read(m, SYSSTATUS) == 0xC000
    assert read(m, SYSSTATUS) == 0
    # measurement block: ESD corruption of a gain
    m.corrupt(IGAINL, 0x7A12)
    assert read(m, SYSSTATUS) == 0x3000
    clk.now += 1000
    assert read(m, URMS) == 23000  # frozen at the last value
    # metering block corruption stops energy
    assert abs(read(m, APENERGY) - 20.4) <= 1  # the second before
    m.corrupt(MMODE, 0x7C22)
    assert read(m, SYSSTATUS) == 0xF000
    assert run(clk, m, 120000) == 0
    # a stored checksum hit by ESD is caught the same way
    clk, m = make()
    start(m)
    assert read(m, SYSSTATUS) == 0
    m.corrupt(CS2, 0x6BB8)
    assert read(m, SYSSTATUS) == 0x3000
    assert read(m, CS2) == 0x6BB9  # a read still shows the computed value


def test_plconsth_takes_effect_with_plconstl():
    clk, m = make()
    m.set_load(230.0, 10.0)
    write(m, CALSTART, 0x5678)
    write(m, PLCONSTH, 0x002B)  # PL 0x002BA2E8 = 2 x default, once L is written
    assert read(m, PLCONSTH) == 0x002B
    assert abs(run(clk, m, 60000) - 1226.7) <= 1  # still the default PL
    write(m, PLCONSTL, 0xA2E8)
    assert abs(run(clk, m, 60000) - 613.3) <= 1  # half the pulses
    assert read(m, CS1) == cs_of([0x002B, 0xA2E8] + CAL_DEFAULTS[2:])


# ---- energy -------------------------------------------------------------------------


def test_one_hour_at_2300_w_is_2_3_kwh_times_mc():
    for mc in (3200, 1000):
        clk, m = make(mc=mc)
        start(m)
        m.set_load(230.0, 10.0, pf=1.0)
        total = run(clk, m, HOUR)
        expect = 2.3 * mc * 10  # 0.1 pulse per LSB
        assert abs(total - expect) <= 1, (mc, total)
        assert abs(m.true_wh_forward - 2300.0) < 1e-6
        assert abs(m.load_wh_forward - 2300.0) < 1e-6
        assert m.true_wh_reverse == 0.0
        assert abs(total * 100.0 / mc - m.true_wh_forward) <= 100.0 / mc
        assert abs(m.cf1_pulses - 2.3 * mc) <= 1
        assert read(m, ANENERGY) == 0
        assert read(m, ENSTATUS) == 0x8800  # running, forward, L line, no reactive load


def test_energy_register_wraps_and_clears_on_read():
    clk, m = make()
    start(m)
    m.set_load(230.0, 60.0)  # 13.8 kW: 16-bit capacity (2.048 kWh) in 534 s
    clk.now += 600000  # 2.3 kWh = 73600 LSB
    v = read(m, APENERGY)
    assert abs(v - (73600 - 65536)) <= 1
    assert read(m, LASTDATA) == v
    assert read(m, APENERGY) == 0
    a = read(m, ATENERGY)
    assert abs(a - (73600 - 65536)) <= 1
    assert read(m, ATENERGY) == 0


def test_reverse_energy_sets_revp():
    clk, m = make()
    start(m)
    m.set_load(230.0, 10.0, pf=-1.0)
    assert read(m, POWERF) == 0x83E8
    assert s16(read(m, PMEAN)) == -2300
    assert read(m, PANGLE) == 1800
    total = run(clk, m, HOUR, addr=ANENERGY)
    assert abs(total - 73600) <= 1
    assert read(m, APENERGY) == 0
    assert abs(m.true_wh_reverse - 2300.0) < 1e-6 and m.true_wh_forward == 0.0
    assert read(m, ENSTATUS) & 0x1000  # RevP
    assert read(m, SYSSTATUS) == 0x0020  # RevPchg (FuncEn.RevPEn on by default)
    assert read(m, SYSSTATUS) == 0
    # back to import: RevP clears at the next whole pulse
    m.set_load(230.0, 10.0, pf=1.0)
    clk.now += 1000
    assert read(m, ENSTATUS) & 0x1000 == 0
    assert read(m, SYSSTATUS) == 0x0020
    # with FuncEn 0030H the direction IRQs are off
    write(m, FUNCEN, 0x0030)
    m.set_load(230.0, 10.0, reverse=True)
    clk.now += 1000
    assert read(m, ENSTATUS) & 0x1000
    assert read(m, SYSSTATUS) == 0


def test_forward_and_reverse_net_inside_the_quantum():
    clk, m = make()
    start(m)
    for _ in range(5000):  # 1 ms each way: 0.2 of the 0.01-pulse quantum
        m.set_load(230.0, 10.0, pf=1.0)
        clk.now += 1
        m.set_load(230.0, 10.0, pf=-1.0)
        clk.now += 1
    assert read(m, APENERGY) == 0 and read(m, ANENERGY) == 0
    assert abs(read(m, ATENERGY) - 204.4) <= 1  # absolute: no netting
    assert m.cf1_pulses == 0
    assert abs(m.true_wh_forward - 2300 * 5 / 3600.0) < 1e-6
    assert abs(m.true_wh_forward - m.true_wh_reverse) < 1e-6


def test_reactive_energy_and_lead_lag():
    clk, m = make()
    start(m)
    m.set_load(230.0, 10.0, pf=0.5)
    assert read(m, POWERF) == 500
    assert read(m, PANGLE) == 600
    assert s16(read(m, PMEAN)) == 1150
    assert s16(read(m, QMEAN)) == 1991  # 1991.9 var
    assert read(m, SMEAN) == 2300
    q = run(clk, m, 600000, addr=RPENERGY)
    assert abs(q - 2300 * math.sqrt(3) / 2 * 32 / 6) <= 1  # var x 3200 imp/kvarh, 10 min
    read(m, APENERGY)
    p = run(clk, m, 600000)
    assert abs(p - 1150 * 32 / 6) <= 1
    m.set_load(230.0, 10.0, pf=0.5, lead=True)
    assert read(m, PANGLE) == 0x8000 | 600
    assert s16(read(m, QMEAN)) == -1992
    assert read(m, POWERF) == 500
    assert read(m, ENSTATUS) & 0x2000 == 0
    clk.now += 10000  # 5.5 varh = 17.7 pulses of capacitive (reverse) reactive energy
    assert read(m, ENSTATUS) & 0x3000 == 0x2000  # RevQ, RevP still forward
    assert read(m, SYSSTATUS) == 0x0040  # RevQchg
    assert abs(read(m, 0x44) - 177.0) <= 1  # RNenergy


def test_no_load_threshold():
    clk, m = make()
    start(m)
    m.set_load(230.0, 0.03)  # 6.9 W: below the 9.2 W start-up power
    assert run(clk, m, HOUR) == 0
    assert read(m, ENSTATUS) & 0x4000  # Pnoload
    assert read(m, IRMS) == 30  # measurement still sees it
    m.set_load(230.0, 0.05)  # 11.5 W: 36.8 pulses an hour
    assert abs(run(clk, m, HOUR) - 368) <= 1
    assert read(m, ENSTATUS) & 0x4000 == 0
    # with a no-load threshold (PNolTh 0400H ~ 4.2 W) the flag comes back below it
    start(m, cal={PNOLTH: 0x0400})
    assert read(m, SYSSTATUS) == 0
    m.set_load(230.0, 0.03)  # 6.9 W: between no-load and start-up
    assert run(clk, m, HOUR) == 0
    m.set_load(230.0, 0.01)  # 2.3 W
    clk.now += 1000
    assert read(m, ENSTATUS) & 0x4000
    # PStartTh scales the start-up power linearly: 08BDH / 4 -> 2.3 W
    start(m, cal={PSTARTTH: 0x08BD // 4 + 1})
    m.set_load(230.0, 0.02)  # 4.6 W
    assert abs(run(clk, m, HOUR) - 147) <= 1


def test_anti_tamper_meters_the_larger_line():
    clk, m = make(mmd=0)
    start(m)
    m.set_load(230.0, 10.0, amps_n=10.0)
    assert abs(run(clk, m, 600000) - 12267) <= 1
    assert read(m, ENSTATUS) & 0x0803 == 0x0800
    m.set_load(230.0, 0.0, amps_n=10.0)  # L bypassed: N carries the load
    assert read(m, SYSSTATUS) == 0x0080  # LNchange
    assert read(m, ENSTATUS) & 0x0803 == 0  # Lline = 0: metering N
    assert abs(run(clk, m, 600000) - 12267) <= 1
    assert read(m, IRMS) == 0 and read(m, IRMS2) == 10000
    assert s16(read(m, PMEAN2)) == 2300
    # hysteresis: L 2 % above N stays on N (threshold 3.125 %), 5 % switches back
    m.set_load(230.0, 10.2, amps_n=10.0)
    assert read(m, SYSSTATUS) == 0
    assert read(m, ENSTATUS) & 0x0800 == 0
    m.set_load(230.0, 10.5, amps_n=10.0)
    assert read(m, SYSSTATUS) == 0x0080
    assert read(m, ENSTATUS) & 0x0800
    # fixed-L mode meters L whatever N does
    clk, m = make(mmd=1)
    start(m)
    m.set_load(230.0, 0.0, amps_n=10.0)
    assert run(clk, m, 600000) == 0
    # L+N mode meters the sum
    clk, m = make(mmd=2)
    start(m)
    m.set_load(230.0, 5.0, amps_n=5.0)
    assert abs(run(clk, m, 600000) - 12267) <= 1


def test_calibration_registers_correct_front_end_errors():
    clk, m = make()
    m.il_error = 0.05
    m.u_error = 0.02
    m.set_load(230.0, 10.0)
    start(m)
    assert read(m, URMS) == 23460
    assert read(m, IRMS) == 10500
    ratio = 1.05 * 1.02
    assert abs(run(clk, m, HOUR) - 73600 * ratio) <= 1
    # gain calibration per the application note: Lgain = (-e / (1 + e)) x 2^15
    e = ratio - 1
    lgain = int(65536 + (-e / (1 + e)) * 32768)
    ugain = int(26400 * 230.0 / 234.6)
    igain = int(31251 * 10.0 / 10.5)
    start(m, cal={LGAIN: lgain}, adj={UGAIN: ugain, IGAINL: igain})
    assert read(m, SYSSTATUS) == 0
    assert abs(read(m, URMS) - 23000) <= 1
    assert abs(read(m, IRMS) - 10000) <= 1
    assert abs(run(clk, m, HOUR) - 73600) <= 4
    # phase calibration at PF 0.5 lag: Lphi = e x 3763.74, sign-magnitude
    m.phase_error_deg = 0.3
    m.set_load(230.0, 10.0, pf=0.5)
    p = run(clk, m, HOUR)
    e = p / 36800.0 - 1
    assert e < -0.008  # 0.3 deg extra lag costs about 0.9 % at PF 0.5
    lphi = int(abs(e) * 3763.74 + 0.5) | (0x8000 if e < 0 else 0)
    start(m, cal={LGAIN: lgain, LPHI: lphi}, adj={UGAIN: ugain, IGAINL: igain})
    assert read(m, SYSSTATUS) == 0
    assert abs(run(clk, m, HOUR) / 36800.0 - 1) < 0.0005


def test_measurement_registers_and_lsb():
    clk, m = make()
    start(m)
    m.set_load(230.123, 7.5, amps_n=5.0, freq=50.0)
    assert read(m, URMS) == 23012
    assert read(m, LSB) == 0x4C00  # 0.3 of an LSB, low byte always 0
    assert read(m, IRMS) == 7500 and read(m, LSB) == 0
    assert read(m, IRMS2) == 5000
    assert read(m, FREQ) == 5000
    m.set_load(230.0, 7.5, freq=60.0)
    assert read(m, FREQ) == 6000
    assert read(m, SMEAN) == 1725
    # saturation at the register limits
    m.set_load(700.0, 70.0)
    assert read(m, URMS) == 0xFFFF and read(m, IRMS) == 0xFFFF
    assert read(m, PMEAN) == 0x7FFF and read(m, SMEAN) == 0x7FFF
    m.set_load(400.0, 90.0, reverse=True)
    assert read(m, PMEAN) == 0x8001
    # mains loss
    m.set_load(0.0, 0.0)
    assert read(m, URMS) == 0 and read(m, FREQ) == 0 and read(m, POWERF) == 0


def test_sag_warning():
    clk, m = make()
    m.set_load(230.0, 1.0)
    assert read(m, SYSSTATUS) == 0
    m.set_load(150.0, 1.0)
    assert read(m, SYSSTATUS) == 0  # SagEn off by default
    write(m, FUNCEN, 0x0030)
    assert m.irq == 1 and m.warnout == 1  # SagWo routes it to WarnOut
    assert read(m, SYSSTATUS) == 0x0002
    assert m.irq == 0
    assert read(m, SYSSTATUS) == 0x0002  # re-asserts while the sag lasts
    m.set_load(175.0, 1.0)  # above 171.6 V
    assert read(m, SYSSTATUS) == 0
    m.set_load(0.0, 0.0)  # mains gone
    assert read(m, SYSSTATUS) == 0x0002


# ---- bus faults -------------------------------------------------------------------------


def test_absent_chip_high_and_low():
    _, m = make()
    m.absent = "high"
    assert read(m, FUNCEN) == 0xFFFF
    assert read(m, SYSSTATUS) == 0xFFFF
    write(m, FUNCEN, 0x0030)
    assert read(m, LASTDATA) == 0xFFFF
    m.absent = "low"
    assert read(m, FUNCEN) == 0
    assert read(m, CALSTART) == 0
    assert frame(m, [FUNCEN, 0, 0x30]) == b"\x00\x00\x00"
    m.absent = None
    assert read(m, FUNCEN) == 0x000C  # the writes never arrived
    assert read(m, CALSTART) == 0x6886


def test_miso_flip_and_lastdata_recovery():
    clk, m = make()
    m.miso_flip(1, bit=0)
    assert read(m, FUNCEN) == 0x010C
    assert read(m, LASTDATA) == 0x000C  # the chip read 000CH
    m.miso_flip(2)
    v = read(m, SAGTH)
    x = v ^ 0x1D6A
    assert x >> 8 and x & 0xFF
    assert (x >> 8) & ((x >> 8) - 1) == 0 and (x & 0xFF) & ((x & 0xFF) - 1) == 0
    assert read(m, SAGTH) == 0x1D6A
    # energy: a corrupted read-clear read is recovered from LastData, not by a re-read
    start(m)
    m.set_load(230.0, 10.0)
    clk.now += 60000
    m.miso_flip(1, bit=7)
    bad = read(m, APENERGY)
    good = read(m, LASTDATA)
    assert bad != good and abs(good - 1226.7) <= 1
    assert read(m, APENERGY) == 0


def test_wrong_spi_mode_reads_garbage():
    _, m = make()
    m.spi.init(baudrate=200000, polarity=0, phase=0)
    assert m.spi.baudrate == 200000 and m.spi.polarity == 0
    assert read(m, FUNCEN) == 0x0018  # 000CH one bit left
    assert read(m, CALSTART) == (0x6886 << 1) & 0xFFFF
    write(m, FUNCEN, 0x0030)
    assert read(m, LASTDATA) == 0x0060  # the ESPHome "check SPI settings" symptom
    m.spi.init(polarity=1, phase=1)
    assert m.spi.baudrate == 200000
    assert read(m, LASTDATA) == 0x0030
    assert read(m, FUNCEN) == 0x0030
    m.spi.deinit()


def test_statistics_count_windows_reads_and_writes():
    clk, m = make()
    read(m, FUNCEN)
    write(m, FUNCEN, 0x0030)
    frame(m, [FUNCEN, 0])
    m.cs(0)
    m.cs(1)
    assert m.transfers == 4
    assert m.reads == 1 and m.writes == 1 and m.discarded_writes == 1
    assert m.spi.read(3, 0xFF) == b"\xff\xff\xff"
    assert m.transfers == 4


def test_pin_and_bus_protocol_shapes():
    _, m = make()
    assert m.cs.value() == 1
    m.cs.value(0)
    assert m.cs() == 0
    buf = bytearray(3)
    m.spi.write(bytes([FUNCEN | 0x80]))
    m.spi.readinto(memoryview(buf)[0:2])
    m.cs.value(1)
    assert buf[0] == 0x00 and buf[1] == 0x0C
    assert m.cs.value() == 1
    assert m.peek(FUNCEN) == 0x000C and m.peek(CALSTART) == 0x6886
    support.raises(ValueError, m.spi.write_readinto, b"\x00\x00", bytearray(3))
    support.raises(ValueError, m.set_load, 230.0, 1.0, 1.5)
