"""ATM90E26 calibration arithmetic, integers only (the Atmel application note, section 3;
docs/metering.md, calibration).

A technician applies a known load from a reference source and reads the meter; these
functions turn the readings into new register values for `ATM90E26.cal`. Loading them
(`chip.cal = validate(new); chip.begin()`) writes them between CalStart/AdjStart with
checksums the driver computes, and the caller stores the dict in the settings file.

    new = calibrate(chip.cal, u_ref_cv=23000, u_read_cv=r["urms_cv"],
                    i_ref_ma=5000, i_read_ma=r["irms_ma"],
                    p_ref_w=1150, p_read_w=r["p_w"])
"""

from drivers.atm90e26 import signed16, validate


def _to16(v):
    return v & 0xFFFF


def rms_gain(gain_old, reference, reading):
    """Ugain / IgainL / IgainN: scale the gain by reference / reading (AN 3.2.4.5)."""
    if reading <= 0:
        raise ValueError("calibration: reading must be above zero")
    g = (gain_old * reference + reading // 2) // reading
    if not 0 < g <= 0x7FFF:
        raise ValueError("calibration: gain out of range (%d); check the wiring" % g)
    return g


def metering_gain(lgain_old, reference, reading):
    """Lgain (or Ngain) so that energy x (1 + gain/32768) matches the reference at PF 1.

    `reference` and `reading` in the same unit (W or Wh): the error e = reading/reference
    - 1 measured with the old gain is removed (AN 3.2.4.2: LRATIO = -e / (1 + e)).
    """
    if reading <= 0 or reference <= 0:
        raise ValueError("calibration: power readings must be above zero")
    g = ((32768 + signed16(lgain_old)) * reference + reading // 2) // reading - 32768
    if not -16384 <= g <= 16384:  # the chip corrects +-50 %
        raise ValueError("calibration: metering error beyond +-50 %; check the wiring")
    return _to16(g)


def phase(lphi_old, reference, reading):
    """Lphi from the energy error at PF 0.5 inductive: Lphi += e x 3763.74 (AN 3.2.4.3),
    sign-magnitude with a 10-bit magnitude."""
    if reading <= 0 or reference <= 0:
        raise ValueError("calibration: power readings must be above zero")
    old = -(lphi_old & 0x3FF) if lphi_old & 0x8000 else lphi_old & 0x3FF
    # e = reading/reference - 1; 3763.74 x e in integer arithmetic
    step = ((reading - reference) * 376374 + reference * 50) // (reference * 100)
    new = old + step
    if not -0x3FF <= new <= 0x3FF:
        raise ValueError("calibration: phase error too large; check the wiring")
    return (0x8000 | -new) if new < 0 else new


def current_offset(igain, irms_noload_ma):
    """IoffsetL/N from the rms current read with no load (AN 3.2.5.2):
    two's complement of Irms x Igain / 2^16 x 2^8."""
    return _to16(-(irms_noload_ma * igain * 256 // 65536))


def calibrate(
    cal,
    u_ref_cv=None,
    u_read_cv=None,
    i_ref_ma=None,
    i_read_ma=None,
    in_ref_ma=None,
    in_read_ma=None,
    p_ref_w=None,
    p_read_w=None,
    p_half_ref_w=None,
    p_half_read_w=None,
):
    """New calibration dict from whichever reference readings are given; validated."""
    new = dict(cal)
    if u_ref_cv is not None:
        new["Ugain"] = rms_gain(cal["Ugain"], u_ref_cv, u_read_cv)
    if i_ref_ma is not None:
        new["IgainL"] = rms_gain(cal["IgainL"], i_ref_ma, i_read_ma)
    if in_ref_ma is not None:
        new["IgainN"] = rms_gain(cal["IgainN"], in_ref_ma, in_read_ma)
    if p_ref_w is not None:
        new["Lgain"] = metering_gain(cal["Lgain"], p_ref_w, p_read_w)
    if p_half_ref_w is not None:
        new["Lphi"] = phase(cal["Lphi"], p_half_ref_w, p_half_read_w)
    return validate(new)
