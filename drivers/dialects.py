"""The modem dialects the drivers know, by the names the settings give, and their loader.

    CELLULAR: the settings' "modem" (drivers/cellular.py): "simcom", "quectel"
    LORAWAN: the board section's "lora_dialect" (drivers/lorawan.py): "rui3", "e5"

Each dialect is its own module, drivers/<driver>_<name>.py with a `Dialect` class, imported
by that computed name only when a driver is built for it: a meter holds only the code of
its modem (tools/build.LAZY lists these modules for the image check). `check` refuses an
unknown name with the known ones named; the settings validation (firmware/config.py) and
the drivers both call it.
"""

CELLULAR = ("simcom", "quectel")
LORAWAN = ("rui3", "e5")
_KNOWN = {"cellular": CELLULAR, "lorawan": LORAWAN}


def check(driver, name, field="dialect"):
    """ValueError naming `field` and the known dialects unless `name` is one of them."""
    known = _KNOWN[driver]
    if name not in known:
        raise ValueError(
            "%s: %r is not a %s dialect; one of %s" % (field, name, driver, ", ".join(known))
        )
    return name


def load(driver, name):
    """A new Dialect of drivers/<driver>_<name>.py (ValueError for an unknown name)."""
    check(driver, name)
    return __import__("drivers.%s_%s" % (driver, name), None, None, ("Dialect",)).Dialect()
