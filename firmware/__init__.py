"""What a prepaid meter is: hardware-free application logic, MicroPython and CPython.

Rooms, lowest first; a module imports only from its own room and the rooms below it
(tests/test_host_import_direction.py reads every import and fails on a wrong arrow;
docs/architecture.md):

    storage    records, the journal, state files, settings/key file replacement, logs,
               the software's identity (version)
    billing    money, time of day, tariffs, the ledger, credit control, events, the
               settings schema, the meter's tick
    tokens     token formats, keys, anti-replay, and the one credit path (intake)
    comms, ui  the back office (MQTT, LoRaWAN, SMS) and the customer (screens, display,
               keypad entry); neither imports the other
    app        the asyncio wiring of one meter (app.py)
    config     the settings and key files on flash (config.py)
    service    the technician's console and calls, safe mode
    build      the meter assembled from its files and its board (build.py)
    start      what main.py runs: boot-loop guard, watchdog, console, crash log (start.py)

Nothing in firmware/ imports drivers/, except build.py, config.py and start.py, which
bind the board, its clock and reset, and the metering chip's check of a calibration:
they are where the hardware meets the application. Everything else reaches the hardware
through the board object the app is given.
"""
