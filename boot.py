# Boot: decide safe mode, nothing else. A file named "safemode" in the root makes main.py
# skip the meter and leave the REPL to a technician (a broken setting can never brick it).
