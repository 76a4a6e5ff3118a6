"""The ESP32 board: maps pins and buses to drivers. The only module that imports machine.

`Board(pins)` takes the "board" section of the settings file (every key optional):

    {"spi": 2, "sck": 18, "mosi": 23, "miso": 19, "cs": 5, "spi_hz": 115200,
     "relay_set": 25, "relay_reset": 26, "led": 2, "buzzer": 4,
     "meter_constant": 3200, "max_w": 30000,
     "modem_uart": 2, "modem_tx": 17, "modem_rx": 16, "modem_pwrkey": 27, "modem_baud": 115200,
     "lora_uart": 1, "lora_tx": 32, "lora_rx": 33, "lora_baud": 115200, "lora_reset": null,
     "lora_dialect": "rui3",
     "display": "ssd1306", "i2c": 0, "sda": 21, "scl": 22, "i2c_hz": 400000,
     "display_addr": 60, "keypad_rows": [], "keypad_cols": [], "keypad_map": "123456789*0#"}

These defaults are a generic ESP32 DevKit wiring (VSPI for the ATM90E26, which must be
isolated from the MCU where its ground is tied to the phase). The display is an SSD1306
on I2C0 ("display": "" for none). The keypad is off until its lines are named: rows are
outputs, columns inputs with pull-ups (a 4x3 pad: with the cellular modem e.g. rows
[13, 14, 15, 32] and columns [33, 34, 35]; with LoRaWAN, which takes 32/33, rows
[13, 14, 15, 16] and columns [17, 34, 35]; GPIO 34-39 have no internal pull-ups, so those
need 10 k resistors to 3.3 V; "keypad_map" lists the keys row by row, 16 of them with a
4x4 pad). The LoRaWAN modem
(settings "transport": "lorawan", `lorawan()`) is a RAK3172 ("lora_dialect": "rui3") or a
Wio-E5 ("e5") on UART1, GPIO 32 (ESP32 TX to the modem's RX) and 33 (RX), 115,200 baud;
"lora_reset" names the GPIO on the modem's active-low NRST (held high; null: not wired).
UART1's default pins on the WROOM module (9, 10) are the SPI flash's, hence 32/33. The board object gives
the app what firmware/app.py documents: clock, local_time(), source (the metering
chip), relay, store, indicator.
"""

import time

import machine

from drivers.atm90e26 import ATM90E26
from drivers.indicator import Indicator
from drivers.relay import LatchingRelay

STRAP_PIN = 0  # the DevKit's BOOT key

DEFAULT_PINS = {
    "spi": 2,
    "sck": 18,
    "mosi": 23,
    "miso": 19,
    "cs": 5,
    "spi_hz": 115200,
    "relay_set": 25,
    "relay_reset": 26,
    "led": 2,
    "buzzer": 4,
    "meter_constant": 3200,
    "max_w": 30000,
    "modem_uart": 2,
    "modem_tx": 17,
    "modem_rx": 16,
    "modem_pwrkey": 27,
    "modem_baud": 115200,
    "lora_uart": 1,
    "lora_tx": 32,
    "lora_rx": 33,
    "lora_baud": 115200,
    "lora_reset": None,
    "lora_dialect": "rui3",
    "display": "ssd1306",
    "i2c": 0,
    "sda": 21,
    "scl": 22,
    "i2c_hz": 400000,
    "display_addr": 60,
    "keypad_rows": [],
    "keypad_cols": [],
    "keypad_map": "123456789*0#",
}


class Board:
    def __init__(self, pins, store, clock, calibration=None, relay_pulse_ms=80, relay_min_ms=1000):
        p = dict(DEFAULT_PINS)
        p.update(pins or {})
        self.pins = p
        Pin = machine.Pin
        self.clock = clock
        self.store = store
        spi = machine.SPI(
            p["spi"],
            baudrate=p["spi_hz"],
            polarity=1,
            phase=1,
            sck=Pin(p["sck"]),
            mosi=Pin(p["mosi"]),
            miso=Pin(p["miso"]),
        )
        self.source = ATM90E26(
            spi,
            Pin(p["cs"], Pin.OUT, value=1),
            calibration=calibration,
            mc=p["meter_constant"],
            max_w=p["max_w"],
            clock=clock,
        )
        self.relay = LatchingRelay(
            Pin(p["relay_set"], Pin.OUT, value=0),
            Pin(p["relay_reset"], Pin.OUT, value=0),
            clock,
            pulse_ms=relay_pulse_ms,
            min_interval_ms=relay_min_ms,
        )
        self.indicator = Indicator(
            clock, led=Pin(p["led"], Pin.OUT, value=0), buzzer=Pin(p["buzzer"], Pin.OUT, value=0)
        )
        self.display = None
        if p["display"] == "ssd1306":
            from drivers.ssd1306 import SSD1306

            i2c = machine.I2C(p["i2c"], scl=Pin(p["scl"]), sda=Pin(p["sda"]), freq=p["i2c_hz"])
            self.display = SSD1306(i2c, addr=p["display_addr"])
        elif p["display"]:
            raise ValueError("board.display: 'ssd1306' or ''")
        self.keypad = None
        if p["keypad_rows"]:
            from drivers.keypad import MatrixKeypad

            rows = [Pin(n, Pin.OUT, value=1) for n in p["keypad_rows"]]
            cols = [Pin(n, Pin.IN, Pin.PULL_UP) for n in p["keypad_cols"]]
            self.keypad = MatrixKeypad(rows, cols, p["keypad_map"], clock, scan_ms=20)

    def modem(self, settings):
        """The cellular modem on its UART (timeout 0: reads never wait; a 2 KB receive
        buffer holds a whole AT+CIPRXGET reply) with PWRKEY through an NPN stage."""
        from drivers.cellular import Cellular

        p = self.pins
        Pin = machine.Pin
        uart = self._uart("modem", 2048)
        pwrkey = Pin(p["modem_pwrkey"], Pin.OUT, value=0)
        return Cellular(
            uart,
            self.clock,
            dialect=settings.modem,
            apn=settings.apn,
            pwrkey=pwrkey,
            baud=p["modem_baud"],
        )

    def lorawan(self, settings, appkey):
        """The LoRaWAN modem on its UART (timeout 0; a 1 KB receive buffer holds a burst
        of events), configured from the settings; appkey: firmware/lorakey.LoRaKey. A
        wired NRST pin is held high (the modem runs)."""
        from drivers.lorawan import from_settings

        p = self.pins
        uart = self._uart("lora", 1024)
        if p["lora_reset"] is not None:
            self.lora_reset = machine.Pin(p["lora_reset"], machine.Pin.OUT, value=1)
        return from_settings(uart, self.clock, settings, appkey, dialect=p["lora_dialect"])

    def _uart(self, prefix, rxbuf):
        """The UART named by the `<prefix>_uart/_baud/_tx/_rx` pins; timeout 0: reads
        never wait."""
        p = self.pins
        return machine.UART(
            p[prefix + "_uart"],
            baudrate=p[prefix + "_baud"],
            tx=p[prefix + "_tx"],
            rx=p[prefix + "_rx"],
            timeout=0,
            rxbuf=rxbuf,
        )

    @staticmethod
    def journal_partition(label="journal"):
        """The raw flash partition for the state journal, or None on a partition table
        without it (a stock MicroPython image: the state then goes to littlefs files)."""
        import esp32

        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
        return found[0] if found else None

    def watchdog(self, timeout_ms):
        """The hardware watchdog (machine.WDT): once armed it cannot be stopped, and the
        board resets unless it is fed within `timeout_ms`."""
        return machine.WDT(timeout=timeout_ms)

    @staticmethod
    def reset():
        machine.reset()

    def local_time(self):
        y, m, d, hh, mm, ss = time.localtime()[:6]
        return y, m, d, hh * 3600 + mm * 60 + ss


def strap_held(pin=STRAP_PIN, samples=5, gap_ms=20):
    """True when the strap pin (pulled up; the BOOT key pulls it low) reads low on every
    one of `samples` reads `gap_ms` apart: a bounce or a glitch is not a request for
    safe mode. Read by boot.py."""
    p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
    for i in range(samples):
        if p.value():
            return False
        if i + 1 < samples:
            time.sleep_ms(gap_ms)
    return True
