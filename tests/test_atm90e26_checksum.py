"""CS1/CS2 checksums and calibration arithmetic of the ATM90E26 driver (portable)."""

import support
from drivers import atm90e26 as chip
from drivers import atm90e26_cal as cal


def _block(block, **over):
    return [over.get(name, default) for name, _, default in block]


def test_power_on_default_vectors():
    assert chip.checksum(_block(chip.METERING)) == 0x55CB
    assert chip.checksum(_block(chip.MEASUREMENT)) == 0x6BB9


def test_known_vectors_from_field_configurations():
    assert chip.checksum(_block(chip.METERING, Lgain=0x1D39)) == 0x7121
    wn = _block(chip.METERING, PLconstH=0x00B9, PLconstL=0xC1F3, Lgain=0x1D39)
    assert chip.checksum(wn) == 0x4A34
    assert chip.checksum(_block(chip.MEASUREMENT, Ugain=0xD464, IgainL=0x6E49)) == 0xD294
    assert chip.checksum(_block(chip.MEASUREMENT, Ugain=0x890F, IgainL=0x6E49)) == 0xE4F4
    an = _block(chip.METERING, Lgain=0x1475, Lphi=0x0024, MMode=0x7C22)
    assert chip.checksum(an) == 0xF860
    assert chip.checksum(_block(chip.MEASUREMENT, Ugain=0x5C3B, IgainL=0x5AA7)) == 0xDF3D


def test_checksum_rule_low_sum_high_xor():
    values = [0x1234, 0xABCD, 0xFFFF, 0x0001]
    data = []
    for v in values:
        data += [v >> 8, v & 0xFF]
    x = 0
    for b in data:
        x ^= b
    assert chip.checksum(values) == (x << 8) | (sum(data) & 0xFF)


def test_decoders():
    assert chip.signed16(0xFFFF) == -1 and chip.signed16(0x7FFF) == 32767
    assert chip.sign_magnitude(0x83E8) == -1000 and chip.sign_magnitude(0x03E8) == 1000


def test_validate_names_the_register():
    assert "Ugain" in str(support.raises(ValueError, chip.validate, {"Ugain": 0x8000}))
    assert "Lgainx" in str(support.raises(ValueError, chip.validate, {"Lgainx": 1}))
    assert "Lgain" in str(support.raises(ValueError, chip.validate, {"Lgain": 0x10000}))
    full = chip.validate({"Lgain": 0x1D39})
    assert full["Lgain"] == 0x1D39 and full["MMode"] == 0x9422 and full["FuncEn"] == 0x0030


def test_gain_arithmetic_from_the_application_note():
    # AN 3.2.4.5: 220.024 V true, 246.01 V read with the default Ugain -> 5C3BH
    assert cal.rms_gain(26400, 22002, 24601) == 0x5C3B
    # 5.008 A true, 6.744 A read with the default IgainL -> 5AA7H
    assert cal.rms_gain(31251, 5008, 6744) == 0x5AA7
    # AN 3.2.4.2: error -13.78 % -> Lgain 1475H (reading 86.22 for reference 100)
    assert cal.metering_gain(0, 10000, 8622) == 0x1475
    # a second pass with no residual error keeps the gain
    assert cal.metering_gain(0x1475, 10000, 10000) == 0x1475
    # an over-reading meter gets a negative (two's complement) gain
    assert cal.metering_gain(0, 10000, 10500) & 0x8000
    # AN 3.2.4.3: error 0.95 % at PF 0.5 -> Lphi 0024H
    assert cal.phase(0, 10000, 10095) == 0x0024
    assert cal.phase(0, 10000, 9905) == 0x8024


def test_calibrate_validates_and_refuses_wild_values():
    c = chip.validate({})
    new = cal.calibrate(c, u_ref_cv=23000, u_read_cv=22770, p_ref_w=2300, p_read_w=2277)
    assert new["Ugain"] > c["Ugain"] and 0 < new["Lgain"] < 0x8000
    support.raises(ValueError, cal.calibrate, c, p_ref_w=2300, p_read_w=1000)
    support.raises(ValueError, cal.calibrate, c, u_ref_cv=23000, u_read_cv=0)
