"""docs/performance.md from tools/bench.py's figures (CPython host tool).

Owns the page's shape: one table per bench section (figure, value, meaning), the
journal-design comparison, and a few fixed paragraphs. The figures live in the page too,
as JSON in a comment at its end, so a run of some sections rewrites the page with the
others' figures kept (`python tools/bench.py --markdown docs/performance.md tokens`).
Figures of a section never run show as "not measured"; figures the table does not name
are listed at the end of their section, so nothing the bench computes is left out.
"""

import json
import platform
import time

MARK = "<!-- bench-figures "

TITLE = "# Performance"

INTRO = """\
Written by `python tools/bench.py --markdown docs/performance.md [section ...]` (`make
bench` prints the same figures as JSON); not edited by hand. Host figures from the
MicroPython unix port (x86-64) and CPython; the same figures measured on an ESP32 belong
with the board image."""

NOTES = """\
## Notes

- Heap figures outside the `board` section are bytes of the 64-bit unix port, where every
  object pointer and small integer takes 8 bytes. They do not halve on the ESP32: bytecode,
  qstrs and constants keep their size (the `.mpy` boot holds 176,960 bytes on 64 bits and
  about 120 KB on 32 bits). The `board` section is measured on 32 bits and is the one to
  hold against a module's heap ([board.md](board.md#heap-what-fits-which-module)).
  Firmware compiled from source (the `heap` section's first week) is larger than the
  `.mpy` or frozen code the board runs.
- `.mpy` files on the board's filesystem are loaded into the heap, as here; only a build
  that freezes the firmware (`tools/build`'s `manifest.py`) runs its code from flash.
  That is why the ideal-source week needs 96 K words on the host and why
  `week_fits_64wk_without_code` is computed rather than run.
- The virtual-clock simulator runs every task wake-up through its own scheduler in
  Python, work the board does not do; `loop_tick_us` and `loop_tick_us_ui` are therefore
  measured in real time on MicroPython's own scheduler.
- `tick_us_chip_model` is mostly the chip model's own register arithmetic in Python; the
  14 SPI transfers of a tick are separate 3-byte transfers, so no GC pause can reach the
  chip's 6 ms abort. `loop_tick_us` is above `tick_us` because the process sleeps
  between ticks and each one starts cold.
- `reconnect_s` is mostly the conversation's 1 s pause between sessions (the modem
  model attaches packet data in 20 ms).
- 110 K words is a WROOM's heap (about 110 KB) counted in the unix port's 8-byte words,
  222,592 bytes of GC heap here: a 64-bit model that overstates the fit, kept to compare
  with earlier runs; the `board` section's WROOM boot is the board's figure. The boot
  sample is taken after `gc.collect()` at the first watchdog feed, with the firmware's
  `.mpy` loaded from the image, the emulator's own models left out and `tech` not yet
  loaded (it loads on the first technician's call).
- Timings vary between runs on a shared host by a few tens of percent (`tick_us`,
  `tick_us_chip_model`, `sim_day_s` most); allocation, counts and flash figures do not."""

BEFORE = (
    "The 110 K-word boot before the firmware moved into sub-packages, by this bench: "
    "`boot_110wk_starts` 5/5, `boot_heap_free_110wk` 44,032 bytes, "
    "`boot_firmware_heap_bytes` 178,880. Without the collections during start-up "
    "(main.py's `gc.threshold`) the tree of this page started 0/5 in 110 K words: the heap is "
    "there, but start-up's garbage leaves it too fragmented for the last allocations. "
    "With the state record by name and the sealed settings (and meter.id) the `.mpy` image "
    "no longer starts in 110 K words on this 64-bit model (`boot_heap_needed_bytes` below); "
    "on 32 bits it never fitted a WROOM, where the frozen build is the one to flash (`board`)."
)

# section -> rows (figure, meaning); the order is the table's
ROWS = {
    "tick": (
        ("tick_us", "median cost of one metering+control tick (`App.step`), ideal source, µs"),
        ("tick_us_p99", "its 99th percentile, µs"),
        ("tick_alloc_bytes", "heap allocated by 1000 steady-state ticks"),
        ("tick_heap_locked_ok", "the same ticks run under `micropython.heap_lock()`"),
        (
            "tick_us_chip_model",
            "the same tick reading the ATM90E26 driver from the chip model, µs",
        ),
        ("spi_transfers_per_tick", "3-byte SPI accesses per tick"),
        ("spi_bus_us_per_tick", "their bus time at 115.2 kHz on the board, µs"),
        ("loop_tick_us", "the metering step with the meter's tasks running in real time, µs"),
        ("loop_tick_us_ui", "the same with the display and keypad tasks running, µs"),
        ("ui_tick_ratio", "the second over the first"),
    ),
    "sim": (("sim_day_s", "wall seconds to simulate the household day (1 s ticks, chip model)"),),
    "heap": (
        (
            "peak_heap_bytes",
            "largest live heap over a simulated week, chip model, less the models",
        ),
        ("model_heap_bytes", "the chip and flash models left out above"),
        ("peak_heap_bytes_ideal_96wk", "the same week, ideal source, `.mpy`, `heapsize=96wk`"),
        ("code_heap_bytes", "of that run: the firmware's modules once imported"),
        ("data_heap_bytes", "the week's peak above everything imported: data and models"),
        ("week_fits_64wk_without_code", "that peak less the firmware's code fits 64 K words"),
        ("week_errors", "task errors during the chip-model week"),
    ),
    "journal": (
        ("journal_append_us", "host time of one journal save on the NOR model, µs"),
        ("recovery_ms", "host time to find the state in a full ring, ms"),
        ("journal_worst_save_ms", "worst save's flash busy time, datasheet typical, ms"),
        ("journal_worst_save_ms_max", "the same at the datasheet maximum, ms"),
        ("saves_per_day_10kw", "journal saves a day at 10 kW, 0.25/kWh, default policy"),
        ("flash_life_years", "years to 100,000 erase cycles at that rate"),
        ("flash_life_years_worst", "the same at the policy's ceiling (2440 saves a day)"),
        ("max_loss_per_cut", "most unsaved charge one of 50 random power cuts lost"),
    ),
    "tokens": (
        ("token_verify_us_compact", "median check of a valid 20-digit credit, µs"),
        ("token_verify_us_compact_p99", "its 99th percentile, µs"),
        ("token_verify_alloc_bytes_compact", "heap allocated per check"),
        ("token_verify_us_envelope", "median check of a valid envelope, µs"),
        ("token_verify_us_envelope_p99", "its 99th percentile, µs"),
        ("token_verify_alloc_bytes_envelope", "heap allocated per check"),
        ("token_reject_us_random_digits", "refusing a random 20-digit string, µs"),
        ("token_reject_us_forged_envelope", "refusing an altered envelope, µs"),
        ("opg_backend", "the OpenPAYGO code-chain implementation in use"),
        ("opg_count", "the device's count for the `c100` and `bad` cases"),
        ("opg_decode_us_c100", "OpenPAYGO decode of a valid token at count 100, µs"),
        ("opg_decode_alloc_c100", "heap allocated by it"),
        ("opg_decode_us_c1", "decode of the first token of a fresh device, µs"),
        ("opg_decode_alloc_c1", "heap allocated by it"),
        ("opg_decode_us_bad", "decode of a token that matches no count (165 steps), µs"),
        ("opg_decode_alloc_bad", "heap allocated by it"),
        ("opg_stock", "whether the stock `openpaygo` decoder was measured"),
        ("opg_stock_source", "where the stock figures come from"),
        ("opg_stock_decode_us_c100", "the stock decoder on the count-100 token, µs"),
        ("opg_stock_decode_alloc_c100", "heap allocated by it"),
        ("opg_stock_decode_us_c1", "the stock decoder on the fresh device's token, µs"),
        ("opg_stock_decode_alloc_c1", "heap allocated by it"),
        ("opg_stock_decode_us_bad", "the stock decoder on the token that matches nothing, µs"),
        ("opg_stock_decode_alloc_bad", "heap allocated by it"),
        ("opg_speedup_c100", "stock time over ours"),
        ("opg_alloc_ratio_c100", "stock allocation over ours"),
    ),
    "drivers": (
        ("import_cellular_simcom_bytes", "cellular driver with the SIMCom dialect: heap held"),
        ("import_cellular_simcom_alloc", "bytes its import allocated"),
        ("import_cellular_quectel_bytes", "the same with the Quectel dialect: heap held"),
        ("import_cellular_quectel_alloc", "bytes its import allocated"),
        ("import_cellular_both_bytes", "the same with both dialects loaded: heap held"),
        ("import_cellular_both_alloc", "bytes its import allocated"),
        ("import_lorawan_rui3_bytes", "LoRaWAN driver with the RUI3 dialect: heap held"),
        ("import_lorawan_rui3_alloc", "bytes its import allocated"),
        ("import_lorawan_e5_bytes", "the same with the Wio-E5 dialect: heap held"),
        ("import_lorawan_e5_alloc", "bytes its import allocated"),
        ("import_lorawan_both_bytes", "the same with both dialects loaded: heap held"),
        ("import_lorawan_both_alloc", "bytes its import allocated"),
    ),
    "comms": (
        ("topup_latency_ms", "top-up published to the state saying the relay closed, median, ms"),
        ("topup_latency_ms_p99", "its 99th percentile, ms"),
        ("topup_ack_ms", "top-up published to the meter's signed ack, median, ms"),
        ("topup_ack_ms_p99", "its 99th percentile, ms"),
        ("reconnect_s", "modem link drop to the meter online again, median, s"),
        ("reconnect_s_max", "the longest of the drops, s"),
        ("comms_late_ms_max", "longest metering-tick delay over the whole run, ms"),
        ("comms_credited", "money credited by the run's top-ups"),
    ),
    "lora": (
        ("lora_topup_latency_ms", "compact top-up published to the verified ack, median, ms"),
        ("lora_topup_latency_ms_max", "the longest, ms"),
        ("lora_topup_air_ms_sf12", "time on air the radio adds (downlink + ack) at SF12, ms"),
        ("lora_topup_air_ms_sf7", "the same at SF7, ms"),
        ("lora_state_period_s", "the default reporting period, s"),
        ("lora_uplinks_per_day", "state and meter-reading uplinks a day at that period"),
        ("lora_uplink_bytes_per_day", "their bytes"),
        ("lora_airtime_s_per_day_sf12", "their time on air a day at SF12, s"),
        ("lora_airtime_s_per_day_sf7", "the same at SF7, s"),
        ("lora_duty_used_pct_sf12", "that air time as a share of the day at SF12, %"),
        ("lora_duty_used_pct_sf7", "the same at SF7, %"),
        ("lora_duty_limit_pct", "EU868's duty-cycle limit per sub-band, %"),
        ("lora_ttn_fair_use_ok_sf12", "within TTN's 30 s of uplink air time a day at SF12"),
        ("lora_ttn_fair_use_ok_sf7", "the same at SF7"),
        ("lora_credited", "money credited by the run's top-ups"),
        ("lora_bridge_dropped", "uplinks the bridge dropped during the run"),
    ),
    "office": (
        ("office_sales_per_s_sqlite", "sales recorded per second, one process, SQLite"),
        ("office_sales_per_s_postgres", "the same on PostgreSQL"),
        ("office_payment_to_ack_ms", "payment POSTed to the meter's signed ack, median, ms"),
        ("office_payment_to_ack_ms_p99", "its 99th percentile, ms"),
    ),
    "image": (
        ("image_files", "files in the software image"),
        ("image_mpy_bytes", "bytes of `.mpy` code in it (xtensawin)"),
        ("image_used_bytes", "bytes of the LittleFS partition in use"),
        ("boot_firmware_heap_bytes", "heap the booted meter holds on the emulated board"),
        ("boot_110wk_starts", "boots that start with 110 K words beyond the emulator"),
        ("boot_heap_free_110wk", "heap free then (median of the boots that started)"),
        ("boot_110wk_failure", "the error a failed start stopped with"),
        ("boot_heap_needed_bytes", "smallest heap beyond the emulator two boots start in"),
    ),
    "board": (
        ("wroom_heap_bytes", "GC heap of an ESP32 WROOM (no PSRAM) once grown (board.md)"),
        ("boot_firmware_heap_bytes_32", "32-bit: heap the booted meter holds, `.mpy` image"),
        ("boot_firmware_heap_bytes_32_frozen", "32-bit: the same, firmware frozen"),
        ("boot_wroom_starts_32", "`.mpy` image: boots that start in the WROOM heap"),
        ("boot_wroom_free_32", "heap free then (median of the boots that started)"),
        ("boot_wroom_failure_32", "what the first failed start said"),
        ("boot_wroom_starts_32_frozen", "frozen: boots that start in the WROOM heap"),
        ("boot_wroom_free_32_frozen", "heap free then (median)"),
        ("boot_wroom_failure_32_frozen", "what the first failed start said"),
        ("week_peak_heap_bytes_32", "32-bit: a week's largest live heap, ideal source, `.mpy`"),
        ("week_heap_left_wroom_32", "the WROOM heap less that peak"),
        ("week_peak_heap_bytes_32_frozen", "32-bit: the same week, firmware frozen"),
        ("week_heap_left_wroom_32_frozen", "the WROOM heap less that peak"),
        ("week_errors_32", "task errors in the `.mpy` week"),
        ("week_errors_32_frozen", "task errors in the frozen week"),
    ),
}

WHAT = {
    "tick": "Under `micropython` (tools/bench_mpy.py): the real App on the simulated board, "
    "TOU tariff, friendly windows, standing charge and max-power limiter active.",
    "sim": "The bundled household day (scenarios/household.json) through `tools.sim`.",
    "heap": "A simulated week at 1 s ticks; heap sampled after `gc.collect()` each minute.",
    "journal": "The NOR flash model with the W25Q32JV datasheet's timings "
    "(tools/bench_journal_mpy.py), and simulated 10 kW days.",
    "tokens": "Under `micropython` (tools/bench_tokens_mpy.py, tools/bench_openpaygo_mpy.py); "
    "the stock decoder is `openpaygo` 0.6.3 on the same tokens and interpreter.",
    "drivers": "Under `micropython` from `.mpy` (tools/bench_import_mpy.py), one fresh "
    "process per case: a modem driver imported with drivers/at.py and what it shares, and "
    "its dialect modules loaded by name as the meter loads its own.",
    "comms": "On loopback: mosquitto, the live meter under `micropython` at 100 ms ticks "
    "with the SIMCom modem model, 100 top-ups and 5 link drops (tools/bench_comms.py).",
    "lora": "On loopback: vend -> mosquitto -> bridge -> network-server stand-in -> "
    "RAK3172 model -> firmware, EU868, duty cycle off; air times computed "
    "(tools/bench_lora.py).",
    "office": "`tools.office` on SQLite and on a throwaway PostgreSQL cluster, and a "
    "payment to the live meter's ack on loopback (tools/bench_office.py).",
    "image": "The image `tools/build` makes, booted as a factory image on the emulated "
    "board (tools/bench_image.py).",
    "board": "On tools/mpy32's 32-bit MicroPython 1.28.0 (the ESP32's 4-byte objects): the "
    "factory image booted on the emulated board, and a simulated week on the ideal source, "
    "from `.mpy` and with the firmware frozen into the interpreter from the project's "
    "manifest (tools/bench_board.py). The figures above this section are the 64-bit port's.",
}

DESIGNS = (
    ("ring", "ring on a raw partition"),
    ("lfs_ab", "littlefs, two alternating files"),
    ("lfs_inplace", "littlefs, one file rewritten in place"),
)


def value(v):
    """A figure as the table shows it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return "{:,}".format(v) if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if abs(v) >= 10000:
            return "{:,.1f}".format(v)
        return ("%.4g" % v) if abs(v) < 10 else ("%.1f" % v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def saved(text):
    """(figures by section, dates by section) kept in an earlier page, or empty ones."""
    at = text.rfind(MARK)
    if at < 0:
        return {}, {}
    data = json.loads(text[at + len(MARK) : text.index("-->", at)])
    return data.get("figures", {}), data.get("dates", {})


def _designs(d):
    out = [
        "| design | erases per save | programs per save | bytes programmed | worst save (typ / max) |",
        "|---|---|---|---|---|",
    ]
    for key, name in DESIGNS:
        r = d.get(key)
        if r:
            out.append(
                "| %s | %s | %s | %s | %s ms / %s ms |"
                % (
                    name,
                    value(r["erases_per_save"]),
                    value(r["programs_per_save"]),
                    value(r["bytes_programmed_per_save"]),
                    value(r["worst_save_flash_ms_typ"]),
                    value(r["worst_save_flash_ms_max"]),
                )
            )
    return out


SPARE = 40960  # the heap a module must keep free after a week to be called a fit


def _fits(figures, suffix):
    held = figures.get("boot_firmware_heap_bytes_32" + suffix)
    left = figures.get("week_heap_left_wroom_32" + suffix)
    if held is None or left is None:
        return "not measured"
    if held >= figures["wroom_heap_bytes"] or left < 0:
        return "does not fit (%s B at boot, %s B left after a week)" % (value(held), value(left))
    verdict = "fits" if left >= SPARE else "under 40 KB left"
    return "%s (%s B at boot, %s B left after a week)" % (verdict, value(held), value(left))


def _budget(figures):
    """The heap budget per module from the board section's figures (docs/board.md)."""
    heap = value(figures["wroom_heap_bytes"])
    return [
        "| module | GC heap | `.mpy` image | frozen build |",
        "|---|---|---|---|",
        "| ESP32 WROOM (no PSRAM) | %s B once grown | %s | %s |"
        % (heap, _fits(figures, ""), _fits(figures, "_frozen")),
        "| ESP32 WROVER, ESP32-S3 with PSRAM | grows into the PSRAM (megabytes) | fits | fits |",
        "| ESP32-S3 without PSRAM | grows into ESP-IDF's free RAM | not measured | not measured |",
    ]


def render(by_section, dates, sections):
    """The page: a table per section in `sections`, from `by_section` {section: figures}."""
    lines = [TITLE, "", INTRO, "", BEFORE, ""]
    for section in sections:
        figures = by_section.get(section, {})
        when = dates.get(section)
        lines.append("## %s" % section)
        lines.append("")
        lines.append(WHAT[section] + (" Measured %s." % when if when else " Not measured yet."))
        lines.append("")
        lines.append("| figure | value | meaning |")
        lines.append("|---|---|---|")
        named = {"journal_designs"}
        for key, meaning in ROWS[section]:
            named.add(key)
            if key in figures:
                lines.append("| `%s` | %s | %s |" % (key, value(figures[key]), meaning))
            elif when is None:
                lines.append("| `%s` | not measured | %s |" % (key, meaning))
        for key in sorted(k for k in figures if k not in named):
            lines.append("| `%s` | %s | |" % (key, value(figures[key])))
        lines.append("")
        if "wroom_heap_bytes" in figures:
            lines.append(
                "The heap budget per module (a fit keeps 40 KB free after the week; "
                "[board.md](board.md#heap-what-fits-which-module)):"
            )
            lines.append("")
            lines.extend(_budget(figures))
            lines.append("")
        if "journal_designs" in figures:
            lines.append("One state record kept three ways (the ring programs exactly its bytes):")
            lines.append("")
            lines.extend(_designs(figures["journal_designs"]))
            lines.append("")
    lines.append(NOTES)
    lines.append("")
    data = {"figures": by_section, "dates": dates}
    lines.append(MARK + json.dumps(data, sort_keys=True) + " -->")
    return "\n".join(lines) + "\n"


def write(path, by_section, sections):
    """Put this run's sections (`by_section`: {section: figures}) into the page at `path`,
    keeping the sections it did not run, and rewrite it."""
    try:
        with open(path) as f:
            kept, dates = saved(f.read())
    except FileNotFoundError:
        kept, dates = {}, {}
    stamp = "%s on %s %s, Python %s" % (
        time.strftime("%Y-%m-%d"),
        platform.system(),
        platform.machine(),
        platform.python_version(),
    )
    for section, figures in by_section.items():
        kept[section] = figures
        dates[section] = stamp
    with open(path, "w") as f:
        f.write(render(kept, dates, sections))
