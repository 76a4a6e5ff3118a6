# Start the meter: settings, board, app. Everything else lives in firmware/ and drivers/.
# While the code loads and the meter is built the GC runs every BOOT_GC_BYTES allocated
# (firmware/start.py turns that off before the loop): garbage freed early keeps the
# long-lived objects packed low, so the start-up fits a small heap (docs/performance.md).
import gc

gc.collect()
gc.threshold(8192)  # firmware/start.py BOOT_GC_BYTES
import firmware.start  # noqa: E402

firmware.start.main()
