"""Host side of the live meter (tools/sim/live.py): start it under `micropython` against
a broker, send it commands, read its status. Used by the end-to-end tests and the bench.

    with LiveMeter(tmpdir, broker_port, vending_key, "12345678", watts=2000) as m:
        m.wait(lambda s: s["online"])          # status polled until true (deadline)
        m.fault("drop_link"); m.status()["balance"]

    # LoRaWAN: no broker; the modem model's air goes to a network-server stand-in
    lora = {"netserver": ("127.0.0.1", ns_port), "dev_eui": "70B3D57ED0000001",
            "join_eui": "0000000000000001", "appkey": "<32 hex>", "duty_div": 0}
    with LiveMeter(tmpdir, None, vending_key, "12345678", lorawan=lora) as m:
        m.wait(lambda s: s["online"])
"""

import binascii
import json
import os
import subprocess
import time

from tools.sim.host import ROOT, micropython_cmd, mpy_env
from tools.vend import core

# Modem timeouts for a model on loopback: seconds instead of minutes.
FAST_MODEM = {
    "at": 1000,
    "probe": 300,
    "boot": 3000,
    "reg": 3000,
    "reg_poll": 50,
    "pdp": 2000,
    "pdp_close": 1000,
    "open": 3000,
    "telemetry": 5000,
}


class LiveError(RuntimeError):
    pass


class LiveMeter:
    def __init__(
        self,
        state_dir,
        port,
        vending_key,
        meter_id,
        watts=0,
        tick_ms=100,
        settings=None,
        host="127.0.0.1",
        heap="2m",
        relay_closed=False,
        lorawan=None,
    ):
        if lorawan is None:
            s = {"meter_id": meter_id, "mqtt_host": host, "mqtt_port": port}
            s["mqtt_keepalive_s"] = 10
        else:  # LoRaWAN mode (tools/sim/live.py): no broker
            s = {"meter_id": meter_id}
        s.update(settings or {})
        self.meter_id = meter_id
        self.key = core.meter_key(vending_key, meter_id, 0)
        os.makedirs(state_dir, exist_ok=True)
        self.cfg_path = os.path.join(state_dir, "live.json")
        cfg = {
            "dir": state_dir,
            "settings": s,
            "key": binascii.hexlify(core.meter_key_record(self.key, 0, 255)).decode(),
            "watts": watts,
            "tick_ms": tick_ms,
            "relay_closed": relay_closed,
            "modem_timeouts": FAST_MODEM,
        }
        if lorawan is not None:
            cfg["transport"] = "lorawan"
            for k in ("dev_eui", "join_eui", "appkey", "duty_div", "lora_model"):
                if lorawan.get(k) is not None:
                    cfg[k] = lorawan[k]
            cfg["netserver"] = list(lorawan["netserver"])
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)
        self.heap = heap
        self.proc = None
        self.lines = []  # stdout lines that were not answers (firmware prints)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.proc = subprocess.Popen(
            [micropython_cmd(), "-X", "heapsize=" + self.heap, "tools/sim/live.py", self.cfg_path],
            cwd=str(ROOT),
            env=mpy_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._answer("ready")

    def _answer(self, want=None):
        """The next JSON line on stdout (firmware log lines are kept in .lines)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise LiveError("live meter exited:\n" + "".join(self.lines[-40:]))
            if line.startswith("{"):
                obj = json.loads(line)
                if want is None or want in obj:
                    return obj
            self.lines.append(line)

    def cmd(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        got = self._answer()
        if "error" in got:
            raise LiveError(got["error"])
        return got

    def status(self):
        return self.cmd({"do": "status"})

    def fault(self, name, **kw):
        return self.cmd(dict(kw, do="fault", name=name))

    def watts(self, w):
        return self.cmd({"do": "watts", "w": w})

    def wait(self, pred, timeout=20.0, every=0.05):
        """Poll status until pred(status) is true; the last status, or LiveError."""
        end = time.monotonic() + timeout
        while True:
            st = self.status()
            if pred(st):
                return st
            if time.monotonic() > end:
                raise LiveError(
                    "condition not met in %.0f s; last status: %r\nmeter output:\n%s"
                    % (timeout, st, "".join(self.lines[-40:]))
                )
            time.sleep(every)

    def stop(self):
        """Quit cleanly; returns the final status (None if it had died)."""
        if self.proc is None:
            return None
        final = None
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write('{"do": "quit"}\n')
                self.proc.stdin.flush()
                final = self._answer("bye")["bye"]
        except (LiveError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return final
