"""Performance and memory figures, printed as one JSON object (CPython host tool).

  tick_us           median cost of one metering+control tick (App.step) under micropython
  tick_us_p99       its 99th percentile
  tick_alloc_bytes  heap allocated by 1000 steady-state ticks (must be 0)
  loop_tick_us, loop_tick_us_ui  the metering step's median with the meter's tasks
                    running in real time on MicroPython's scheduler (100 ms ticks, 10 s),
                    without and with the display and keypad tasks; ui_tick_ratio the
                    second over the first (best of three alternated runs each)
  peak_heap_bytes   the largest live heap (gc.mem_alloc() right after gc.collect(), sampled
                    every simulated minute) over a simulated week at 1 s ticks, less the
                    ATM90E26 model's own code and state and the NOR flash model's bytes
                    (host-side hardware); the relay, mains and clock models and the
                    runner are still counted
  peak_heap_bytes_ideal_96wk  the same week on the ideal energy source (no chip model),
                    firmware as .mpy, run under `-X heapsize=96wk` (see IDEAL_HEAP)
  code_heap_bytes   of that run: the live heap the firmware's modules (.mpy code and
                    module globals) take once imported, before anything is built
  data_heap_bytes   the week's peak minus the live heap with everything imported (the
                    firmware's and the simulator's modules, the flash model): the data
                    the meter (and the board models' state) allocates
  week_fits_64wk_without_code  whether the week's peak less the firmware's code is within
                    `-X heapsize=64wk` (131,072 bytes here): computed, as the unix port
                    cannot take the code out of the heap the way frozen modules do
  tick_us_chip_model  the same tick reading the driver over SPI from the chip model
  spi_transfers_per_tick, spi_bus_us_per_tick  SPI accesses per tick and their bus time
                    at 115.2 kHz on the board
  sim_day_s         wall seconds to simulate the bundled household day at 1 s ticks
  journal_append_us host time of one journal save (record, CRC, blank check, program)
                    on the NOR model under micropython
  recovery_ms       host time to find the state in a full ring (every slot written)
  journal_worst_save_ms  the worst single save's flash busy time from the datasheet
                    (typical; `_max` the datasheet maximum): one sector erase + one program
  journal_designs   the ring against the same record kept on littlefs (two alternating
                    files, or one file rewritten in place): erases and programs per save,
                    worst save (tools/bench_journal_mpy.py)
  saves_per_day_10kw  journal saves in a simulated day at 10 kW continuous (flat 0.25/kWh,
                    default write policy)
  flash_life_years  100,000 erase cycles / the busiest sector's erases per year at that
                    rate (the ring wears its 16 sectors evenly)
  flash_life_years_worst  the same at the policy's ceiling whatever the tariff: a
                    consumption save every persist_min_s (1440/day) plus 1000 event
                    saves a day
  max_loss_per_cut  the most unsaved charge one power cut lost, over 50 random cuts in a
                    10 kW day (money, the currency's units)

  token_verify_us_compact / _envelope  median time to check one valid token of each
                    format under micropython (p99 and heap per check beside them;
                    tools/bench_tokens_mpy.py)
  opg_decode_us_c100, opg_decode_alloc_c100  our OpenPAYGO Token decode at count 100,
                    time and allocation, beside the stock `openpaygo` decoder's
                    (opg_stock_*) on the same tokens under the same interpreter
                    (tools/bench_openpaygo_mpy.py)

  topup_latency_ms, topup_ack_ms, reconnect_s  remote top-ups over MQTT on loopback
                    (mosquitto, the live meter with the modem model; tools/bench_comms.py)

  lora_topup_latency_ms, lora_uplink_bytes_per_day, lora_duty_used_pct_sf12, ...  a
                    top-up over LoRaWAN (back office -> bridge -> network-server stand-in
                    -> modem model -> firmware and the signed ack back) and the uplink
                    load at the default reporting period against the duty cycle
                    (tools/bench_lora.py)

  office_sales_per_s_sqlite, office_sales_per_s_postgres, office_payment_to_ack_ms, _p99
                    the purchase system: sales recorded per second by one process on
                    each store, and a payment POSTed to the live meter's signed ack
                    on loopback (tools/bench_office.py)

  import_cellular_simcom_bytes, import_cellular_quectel_bytes, import_cellular_both_bytes,
  import_lorawan_rui3_bytes, import_lorawan_e5_bytes, import_lorawan_both_bytes
                    the heap a modem driver holds once imported (its .mpy, drivers/at.py
                    and what they share) with one dialect loaded as the meter does, and
                    with both; `_alloc` beside each: the bytes the import allocated
                    (tools/bench_import_mpy.py)

  image_files, image_mpy_bytes, image_used_bytes  the software image tools/build makes:
                    files, bytes of .mpy code, bytes of the 2 MB LittleFS partition used
  boot_firmware_heap_bytes, boot_heap_free_110wk  a factory image booted on the emulated
                    board: the heap the built meter holds (less the emulator's models)
                    and what a 110 K-word heap has left then (tools/bench_image.py)

Usage: python tools/bench.py [--markdown PATH] [section ...]
  sections: tick, sim, heap, journal, tokens, drivers, comms, lora, office, image
  --markdown PATH  also write the figures as a page (tools/bench_report.py; the project's
                   is docs/performance.md), keeping the sections of an earlier page that
                   this run did not measure
"""

import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.sim import host  # noqa: E402


def tick_figures():
    return mpy_json("tools/bench_mpy.py", "256wk")


def household():
    with open(ROOT / "scenarios/household.json") as f:
        return json.load(f)


def week():
    day = household()
    sc = copy.deepcopy(day)
    sc["duration_s"] = 7 * 86400
    sc["load"] = [
        {"at_s": d * 86400 + step["at_s"], "watts": step["watts"]}
        for d in range(7)
        for step in day["load"]
    ]
    sc["topups"] = [{"at_s": d * 86400 + 72000, "amount": "10.00"} for d in range(7)]
    return sc


# The ideal-source week's heap. 64 K words (130 KB on the host) held the firmware and
# the simulator's runner until the token code arrived; the firmware's code (.mpy here,
# loaded into the heap) no longer fits beside the runner there. Only a frozen build
# (tools/build's manifest.py) takes the code out of the heap; the image's .mpy do not.
IDEAL_HEAP = "96wk"
# `-X heapsize=64wk` in bytes: the "w" scales 32-bit words to the port's 8-byte words
HEAP_64WK_BYTES = 64 * 1024 * 8 // 4
ERASE_CYCLES = 100000
RING_SECTORS = 16
SLOTS_PER_SECTOR = 16


def mpy_json(script, heap, args=()):
    out = subprocess.run(
        [host.micropython_cmd(), "-X", "heapsize=" + heap, str(ROOT / script), *args],
        cwd=str(ROOT),
        env=host.mpy_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def life_years(saves_per_day):
    per_sector_day = saves_per_day / (RING_SECTORS * SLOTS_PER_SECTOR)
    return round(ERASE_CYCLES / per_sector_day / 365.25, 1)


def ten_kw_day(cuts=0):
    sc = {
        "start": "2026-01-05T00:00:00",
        "duration_s": 86400,
        "tariff": {"type": "flat", "price_per_kwh": "0.2500"},
        "balance": "1000.00",
        "meter": "ideal",
        "load": [{"at_s": 0, "watts": 10000}],
    }
    if cuts:
        slot = 86400 // cuts
        sc["power_cuts"] = [{"at_s": i * slot + slot // 3, "for_s": 30} for i in range(cuts)]
    return host.run(sc)["final"]


def journal_figures(figures):
    designs = mpy_json("tools/bench_journal_mpy.py", "1024wk")
    ring = designs["ring"]
    figures["journal_designs"] = designs
    figures["journal_append_us"] = ring["host_us_per_save"]
    figures["recovery_ms"] = ring["recovery_ms_full_ring"]
    figures["journal_worst_save_ms"] = ring["worst_save_flash_ms_typ"]
    figures["journal_worst_save_ms_max"] = ring["worst_save_flash_ms_max"]
    day = ten_kw_day()
    assert ring["erases_per_save"] == 1 / SLOTS_PER_SECTOR
    figures["saves_per_day_10kw"] = day["saves"]
    figures["flash_life_years"] = life_years(day["saves"])
    figures["flash_life_years_worst"] = life_years(1440 + 1000)
    figures["max_loss_per_cut"] = ten_kw_day(cuts=50)["cut_lost_charge_max"]


def heap_figures(figures):
    # The chip model is host-side hardware (and compiling it from source needs more
    # transient heap than 64 K words): the week with the chip runs in a larger heap
    # and counts what is not the model; the same week on the ideal source must run
    # in 64 K words.
    report = host.run(week(), heap="256wk")
    model = report["final"]["model_heap"]
    figures["peak_heap_bytes"] = report["final"]["live_heap_peak"] - model
    figures["model_heap_bytes"] = model
    # the journal on a 2-sector flash model here: its bytes are not the ESP32's heap
    # ... and from .mpy, as the board runs it (compiling from source needs heap)
    with tempfile.TemporaryDirectory() as mpy:
        host.compile_firmware(mpy)
        ideal = host.run(
            dict(week(), meter="ideal", flash_sectors=2), heap=IDEAL_HEAP, mpy_dir=mpy
        )
    fin = ideal["final"]
    figures["peak_heap_bytes_ideal_" + IDEAL_HEAP] = fin["live_heap_peak"] - fin["model_heap"]
    # code against data: the heap the firmware's modules take once imported, and what
    # the week adds above everything imported (tools/sim/runner.py measures both)
    assert not fin["late_imports"], fin["late_imports"]
    figures["code_heap_bytes"] = fin["code_heap"]
    figures["data_heap_bytes"] = fin["live_heap_peak"] - fin["imported_heap"]
    # the whole week's peak with the firmware's code taken out of the heap (frozen
    # into flash on the board), against 64 K words
    figures["week_fits_64wk_without_code"] = (
        fin["live_heap_peak"] - fin["code_heap"] <= HEAP_64WK_BYTES and not fin["errors"]
    )
    figures["week_errors"] = report["final"]["errors"]


# (driver, dialects loaded) -> the figures' name part
IMPORT_CASES = (
    ("cellular", ("simcom",), "cellular_simcom"),
    ("cellular", ("quectel",), "cellular_quectel"),
    ("cellular", ("simcom", "quectel"), "cellular_both"),
    ("lorawan", ("rui3",), "lorawan_rui3"),
    ("lorawan", ("e5",), "lorawan_e5"),
    ("lorawan", ("rui3", "e5"), "lorawan_both"),
)


def driver_figures(figures):
    """Each case in a fresh micropython, the firmware's .mpy first on its path."""
    with tempfile.TemporaryDirectory() as mpy:
        host.compile_firmware(mpy)
        for driver, names, label in IMPORT_CASES:
            out = subprocess.run(
                [
                    host.micropython_cmd(),
                    "-X",
                    "heapsize=256wk",
                    str(ROOT / "tools/bench_import_mpy.py"),
                    driver,
                    *names,
                ],
                cwd=str(ROOT),
                env=host.mpy_env(mpy),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out.strip().splitlines()[-1])
            figures["import_%s_bytes" % label] = got["held"]
            figures["import_%s_alloc" % label] = got["alloc"]


def section_figures(section):
    """The figures of one bench section, as a dict."""
    figures = {}
    if section == "tick":
        figures.update(tick_figures())
    elif section == "sim":
        t0 = time.perf_counter()
        host.run(household())
        figures["sim_day_s"] = round(time.perf_counter() - t0, 2)
    elif section == "heap":
        heap_figures(figures)
    elif section == "journal":
        journal_figures(figures)
    elif section == "tokens":
        figures.update(mpy_json("tools/bench_tokens_mpy.py", "256wk"))
        site = next((ROOT / ".venv/lib").glob("python*/site-packages"), None)
        opg = [str(site)] if site else []
        figures.update(mpy_json("tools/bench_openpaygo_mpy.py", "8M", opg))
    elif section == "drivers":
        driver_figures(figures)
    elif section == "comms":
        from tools.bench_comms import comms_figures

        figures.update(comms_figures())
    elif section == "lora":
        from tools.bench_lora import lora_figures

        figures.update(lora_figures())
    elif section == "office":
        from tools.bench_office import office_figures

        figures.update(office_figures())
    elif section == "image":
        from tools.bench_image import image_figures

        figures.update(image_figures())
    elif section == "board":
        from tools.bench_board import board_figures

        figures.update(board_figures())
    return figures


def main(sections, markdown=None):
    by_section = {}
    figures = {}
    for section in sections:
        t0 = time.perf_counter()
        by_section[section] = section_figures(section)
        figures.update(by_section[section])
        print("bench: %s took %.0f s" % (section, time.perf_counter() - t0), file=sys.stderr)
    print(json.dumps(figures, indent=1, sort_keys=True))
    if markdown:
        from tools import bench_report

        bench_report.write(markdown, by_section, SECTIONS)


SECTIONS = (
    "tick", "sim", "heap", "journal", "tokens", "drivers", "comms", "lora", "office", "image",
    "board",
)  # fmt: skip

USAGE = "usage: python tools/bench.py [--markdown PATH] [section ...]"

if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--markdown"]:
        if len(args) < 2:
            sys.exit(USAGE)
        out, args = args[1], args[2:]
    asked = args or SECTIONS
    unknown = [a for a in asked if a not in SECTIONS]
    if unknown:
        sys.exit("bench: unknown section %s (known: %s)" % (unknown[0], ", ".join(SECTIONS)))
    main(asked, out)
