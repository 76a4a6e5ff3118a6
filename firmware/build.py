"""The meter assembled on its board: its id, settings and keys from their files, the board
(the ESP32's, or the one the simulator passes), the state store, the App and its transports.

The meter's id comes from meter.id (kept apart from the settings, firmware/tokens/meterid.py);
a meter without one takes it once from a good settings file. The settings must name that
meter or none; on the defaults (no good settings copy) the meter still has its id, so
tokens keep working, and says so: `config_defaults`, App.settings_source "defaults".

`build()` is what start-up and the simulator call. A comms, LoRaWAN or SMS fault while
building is printed and the meter runs without it: metering never depends on them.
The state store is the journal on its raw `journal` partition, or, on a partition table
without one (a stock image), the A/B state files on littlefs: announced on the console
and as a `storage_fallback` event in the meter's log (docs/board.md).
"""

import os

from firmware import config
from firmware.app import App
from firmware.billing import events as ev
from firmware.storage import conffile
from firmware.storage.journal import Journal
from drivers.clock import Clock

STATE_DIR = "state"
# App.settings_source by conffile source: which copy of the settings the meter runs on
SOURCES = {conffile.MAIN: "file", conffile.NEW: "new", conffile.BAK: "bak", None: "defaults"}


def make_store(partition):
    """The state store: the journal on its raw partition, or (a partition table without
    one, e.g. a stock image) the A/B state files on littlefs."""
    if partition is not None:
        return Journal(partition)
    try:
        os.mkdir(STATE_DIR)
    except OSError:
        pass
    from firmware.storage.statefile import StateFile  # a stock table only: not resident

    return StateFile(STATE_DIR)


def build(path=config.SETTINGS_PATH, board=None, tick_ms=1000):
    """The meter as main.py starts it: settings from `path`, then the board (the ESP32's
    unless one is given: the simulator passes its own), then the App."""
    id_path = config.id_path_for(path)
    meter_id, id_report = config.load_meter_id(id_path)
    settings, pins, cal, report = config.load_settings(path, meter_id)
    from_file = report is None or report[0] is not None  # not the defaults
    if meter_id is None and id_report[1] == conffile.MISSING and from_file:
        meter_id = config.adopt_meter_id(id_path, settings)  # once: a meter without meter.id
    fallback = False
    if board is None:
        from drivers.board import Board

        part = Board.journal_partition()
        if part is None:
            fallback = True
            print("storage: no 'journal' partition: state in littlefs files")
        board = Board(
            pins,
            make_store(part),
            Clock(),
            calibration=cal,
            relay_pulse_ms=settings.relay_pulse_ms,
            relay_min_ms=settings.relay_min_interval_ms,
        )
    key_path = config.key_path_for(path)
    key, key_report = config.load_meter_key(key_path)
    app = App(
        board,
        settings,
        tick_ms=tick_ms,
        key=key,
        key_path=key_path,
        on_settings=lambda raw: config.save_meter_settings(raw, path),
    )
    app.meter_id = meter_id
    app.settings_source = SOURCES[report[0] if report is not None else conffile.MAIN]
    m = app.meter
    if fallback:  # the log exists only now
        m.log.emit(m.clock.stamp(), ev.STORAGE_FALLBACK, m.ledger.balance, 0)
    config.report_config(m, report, path)
    config.report_key(m, id_report, id_path)
    config.report_key(m, key_report, key_path)
    if key is None:
        print("keys: no meter key in " + key_path + ": tokens answer NotReady")
    if meter_id is None:
        print("meter id: none in " + id_path + ": the settings' meter_id names the meter")
    link = None
    if settings.transport == "lorawan":
        start_lorawan(app, board, settings, key, key_path)
    elif settings.mqtt_host:
        if key is None:
            print("comms: no meter key: MQTT off (messages are signed with it)")
        else:
            from firmware.comms.mqtt.conversation import Comms

            try:  # a comms fault must never keep the meter from metering
                link = board.modem(settings)
                app.comms = Comms(app, link, key)
            except Exception as e:
                link = app.comms = None
                print("comms: not started: " + repr(e))
    if settings.sms_to:  # SMS to the customer: the modem runs for it, MQTT or not
        try:  # like comms: a fault here must never keep the meter from metering
            from firmware.comms.sms import Notifier

            own = link is None
            if own:
                link = board.modem(settings)
            app.sms = Notifier(app, link)
            if own:
                app.extra_tasks.append(link.run())
            app.extra_tasks.append(app.sms.run())
        except Exception as e:
            app.sms = None
            print("sms: not started: " + repr(e))
    return app


def start_lorawan(app, board, settings, key, key_path):
    """The LoRaWAN transport (firmware/comms/lora/conversation.py) as app.comms: the AppKey from
    lora.key beside meter.key. No meter key, no usable key file or any fault building it:
    printed, and the meter runs without LoRa (metering never depends on it). Returns
    the LoRaComms or None."""
    if key is None:
        print("lora: no meter key: LoRaWAN off (uplinks are signed with it)")
        return None
    from firmware.comms.lora import appkey as lorakey

    path = conffile.beside(key_path, config.LORA_KEY_FILE)
    try:  # a comms fault must never keep the meter from metering
        appkey, source, reason = conffile.load(path, lorakey.load)
        if appkey is None:
            config.report_key(app.meter, (source, reason), path)
            print("lora: no usable AppKey in " + path + " (" + str(reason) + "): LoRaWAN off")
            return None
        if source != conffile.MAIN:
            config.report_key(app.meter, (source, reason), path)
        from firmware.comms.lora.conversation import LoRaComms

        app.comms = LoRaComms(app, board.lorawan(settings, appkey), key)
    except Exception as e:
        app.comms = None
        print("lora: not started: " + repr(e))
    return app.comms
