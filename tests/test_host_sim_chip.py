"""The simulator billing from the ATM90E26 driver on the chip model (CPython host side)."""

from decimal import Decimal

from tools.sim import host

LSB_WH = Decimal(100) / 3200  # one energy register LSB (0.1 pulse) at 3200 imp/kWh


def _run(**kw):
    sc = {
        "start": "2026-01-05T10:00:00",
        "duration_s": 3600,
        "balance": "100.00",
        "tariff": {"type": "flat", "price_per_kwh": "0.2000"},
        "series_s": 600,
    }
    sc.update(kw)
    return host.run(sc)


def test_230v_10a_pf1_for_an_hour_bills_2_3_kwh():
    r = _run(load=[{"at_s": 0, "volts": 230, "amps": 10, "pf": 1}])
    f = r["final"]
    energy = Decimal(f["energy_wh"])
    assert abs(energy - 2300) <= LSB_WH, energy
    assert abs(energy - Decimal(f["true_energy_wh"])) <= LSB_WH
    # 2.3 kWh at 0.20 = 0.46 (floor of the billed energy x price)
    assert f["charged"] == str(
        (energy * Decimal("0.20") / 1000).quantize(Decimal("0.01"), "ROUND_FLOOR")
    )
    assert f["meter_faults"] == 0 and f["errors"] == 0
    assert 13 <= f["spi_transfers"] / f["ticks"] <= 15  # 14: three samples of each energy read


def test_every_fault_is_detected_recovered_and_billing_goes_on():
    faults = [
        {"at_s": 300, "fault": "miso_flip"},
        {"at_s": 600, "fault": "absent_high"},
        {"at_s": 660, "fault": "present"},
        {"at_s": 900, "fault": "absent_low"},
        {"at_s": 960, "fault": "present"},
        {"at_s": 1500, "fault": "chip_reset"},
        {"at_s": 2400, "fault": "corrupt_cs"},
    ]
    r = _run(load=[{"at_s": 0, "volts": 230, "amps": 20, "pf": 1}], faults=faults, step_s=1)
    f = r["final"]
    kinds = [e["kind"] for e in r["events"]]
    assert "meter_chip_absent" in kinds
    assert "meter_chip_reset" in kinds
    assert "meter_checksum_error" in kinds
    assert kinds.count("meter_recovered") >= 3
    assert "meter_energy_jump" not in kinds  # a dead bus never billed as a 6553.5-pulse jump
    billed = Decimal(f["energy_wh"])
    expected = Decimal(f["true_energy_wh"]) - Decimal(f["chip_lost_energy_wh"])
    # only what the chip itself lost in its reset is missing; nothing double counted
    assert abs(billed - expected) <= 2 * LSB_WH, (billed, expected)
    assert Decimal(f["chip_lost_energy_wh"]) < Decimal(5)  # at most ~1 s of energy at 4.6 kW
    assert f["errors"] == 0 and f["relay"] == "closed"


def test_neutral_tamper_bills_the_larger_line_and_raises_an_event():
    r = _run(
        load=[
            {"at_s": 0, "volts": 230, "amps": 5, "pf": 1},
            {"at_s": 1800, "volts": 230, "amps": 1, "amps_n": 5, "pf": 1},  # live bypassed
        ]
    )
    f = r["final"]
    assert "tamper_neutral" in [e["kind"] for e in r["events"]]
    # both halves bill 5 A x 230 V: the bypass does not lower the bill
    assert abs(Decimal(f["energy_wh"]) - 1150) <= 4 * LSB_WH, f["energy_wh"]


def test_reverse_energy_is_flagged_and_not_billed():
    r = _run(load=[{"at_s": 0, "volts": 230, "amps": 5, "pf": -1}])
    assert "reverse_energy" in [e["kind"] for e in r["events"]]
    assert Decimal(r["final"]["energy_wh"]) == 0
    assert r["final"]["charged"] == "0.00"


def test_spi_garbage_and_resets_at_high_load_are_counted_and_never_over_bill():
    # 18.4 kW for two hours, one MISO byte in 20 with a flipped bit, a chip reset every
    # 10 minutes; at 1-second ticks and at the 60-second ticks of a long simulation
    for step_s in (1, 60):
        faults = [{"at_s": 0, "fault": "spi_garbage"}]
        faults += [{"at_s": 600 * i + 7 * i, "fault": "chip_reset"} for i in range(1, 13)]
        r = _run(
            load=[{"at_s": 0, "volts": 230, "amps": 80, "pf": 1}],
            faults=faults,
            duration_s=7800 + 600,
            step_s=step_s,
        )
        f = r["final"]
        billed = Decimal(f["energy_wh"])
        metered = Decimal(f["true_energy_wh"]) - Decimal(f["chip_lost_energy_wh"])
        assert billed <= metered + LSB_WH  # never more than the chip metered
        assert f["spi_garbage_flips"] > (10000 if step_s == 1 else 200)
        assert f["meter_lost_resets"] == 12
        # every Wh not billed is counted by the meter, estimated within 2 %
        gone = Decimal(f["load_energy_wh"]) - billed
        seen = Decimal(f["meter_lost_energy_wh"])
        assert abs(gone - seen) <= gone / 50 + 20 * LSB_WH, (step_s, gone, seen)
        # the bound: one read interval (a tick) at the load per reset or rejected read
        cases = f["meter_lost_resets"] + f["meter_lost_reads"]
        assert gone <= cases * Decimal(18400 * step_s) / 3600 + 20 * LSB_WH, (step_s, gone)
        assert f["errors"] == 0
