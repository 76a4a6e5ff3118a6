# Boot: decide safe mode, nothing else (firmware/service/safemode.py). The strap pin is read
# first and any failure to read it counts as "not held"; the meter itself starts in
# main.py, so nothing here can keep a technician from the REPL.
try:
    from drivers.board import strap_held

    _strap = strap_held()
except Exception as e:  # a broken driver file must not stop boot
    print("boot: strap pin not read:", repr(e))
    _strap = False

from firmware.service import safemode

if safemode.decide(_strap):
    print("boot: safe mode (" + safemode.reason + ")")
