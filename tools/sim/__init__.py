"""Simulator: peripheral models and a virtual-time board that run the real firmware.

`python -m tools.sim SCENARIO.json --report OUT.json [--plot OUT.png]` validates the
scenario on the host (CPython), then runs `runner.py` under the MicroPython unix port
with the firmware and the models in one interpreter, in accelerated time.
The models (vclock, pins, power, relay, board) are MicroPython code.
"""
