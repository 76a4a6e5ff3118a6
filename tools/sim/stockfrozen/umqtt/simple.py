"""Stand-in for the umqtt.simple that a stock MicroPython ESP32 image freezes (v1.28
freezes micropython-lib's 1.7.0: ports/esp32/boards/manifest.py `require("umqtt.simple")`),
on the emulated board where the board's `.frozen` is (tools/sim/emuboot.py mounts this
directory at /frozen, before /lib).

Not a client: it says what it is, and every import of it is recorded in the world's
report (`frozen_imports`), so a test can tell which umqtt.simple the firmware loaded.
Making a client of it fails at once, naming it.
"""

from tools.sim import emuworld

STOCK_VERSION = "1.7.0"
STAND_IN = "stock image's frozen umqtt.simple %s (emulator stand-in)" % STOCK_VERSION

emuworld.world().frozen_imports.append(__name__)


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(self, *args, **kw):
        raise MQTTException(STAND_IN)
