"""The technician's REPL end to end: real `mpremote` against the meter while it meters.

The firmware runs under `micropython` on the simulated board in real time
(tools/sim/live.py with "console": true: stdin/stdout are the REPL port, the console and
`tech` attached as main.py does on the board). A small bridge makes that port a TCP
socket, so `mpremote connect socket://127.0.0.1:PORT` talks to it as to a USB serial
port. What a technician relies on: `tech.status()` answers while the ticks go on, with
or without `resume` (the console ignores mpremote's soft reset, so the meter is never
stopped by a connection), file commands work, and a setting typed wrong is refused with
a message naming the field and lands in the audit log.
"""

import ast
import binascii
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tools.sim.host import ROOT, micropython_cmd, mpy_env
from tools.vend import core

METER_ID = "31000001"


class Port:
    """The meter's REPL port (its stdin/stdout) as a TCP socket on 127.0.0.1."""

    def __init__(self, proc):
        self.proc = proc
        self.seen = bytearray()  # everything the meter wrote
        self.conn = None
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._from_meter, daemon=True).start()
        threading.Thread(target=self._accept, daemon=True).start()

    def _from_meter(self):
        out = self.proc.stdout
        while True:
            b = os.read(out.fileno(), 4096)
            if not b:
                return
            with self.lock:
                self.seen.extend(b)
                c = self.conn
            if c is not None:
                try:
                    c.sendall(b)
                except OSError:
                    pass

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.conn = c
            while True:
                try:
                    b = c.recv(4096)
                except OSError:
                    b = b""
                if not b:
                    break
                self.proc.stdin.write(b)
                self.proc.stdin.flush()
            with self.lock:
                self.conn = None
            c.close()

    def wait_for(self, text, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if text in self.seen:
                    return
            time.sleep(0.05)
        raise AssertionError("the meter did not write %r; it wrote %r" % (text, self.seen[-500:]))

    def close(self):
        self.srv.close()


def _mpremote(port, *args, timeout=30):
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return subprocess.run(
        [exe, "connect", "socket://127.0.0.1:%d" % port, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def meter(tmp_path):
    ks = str(tmp_path / "vend.key")
    core.keygen(ks, decimals=2)
    key = core.meter_key(core.load_keystore(ks), METER_ID, 0)
    d = tmp_path / "meter"
    d.mkdir()
    cfg = {
        "dir": str(d),
        "console": True,
        "settings": {
            "meter_id": METER_ID,
            "tariff": {"type": "flat", "price_per_kwh": "0.5000"},
            "low_credit": "2.00",
        },
        "key": binascii.hexlify(core.meter_key_record(key, 0, 255)).decode(),
        "watts": 2000,
        "tick_ms": 100,
    }
    cfg_path = tmp_path / "live.json"
    cfg_path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [micropython_cmd(), "-X", "heapsize=2m", "tools/sim/live.py", str(cfg_path)],
        cwd=ROOT,
        env=mpy_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    port = Port(proc)
    try:
        port.wait_for(b"tech.help()")  # the console's banner: the meter is running
        yield port, d
    finally:
        port.close()
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _eval(port, expr, resume=True):
    args = (["resume"] if resume else []) + ["exec", "print(repr(%s))" % expr]
    r = _mpremote(port, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return ast.literal_eval(r.stdout.strip())


def test_status_answers_while_the_meter_meters(meter):
    port, _ = meter
    first = _eval(port.port, "tech.status()")
    assert first["meter_id"] == METER_ID and first["relay"] in ("open", "closed")
    time.sleep(1.0)
    second = _eval(port.port, "tech.status()")
    assert second["ticks"] >= first["ticks"] + 5  # 100 ms ticks went on between the calls
    assert second["errors"] == 0
    # without `resume`: mpremote soft-resets first; the console ignores it, the meter runs
    third = _eval(port.port, "tech.status()['ticks']", resume=False)
    assert third > second["ticks"]
    # `import tech` works as a module, and exec prints come back
    r = _mpremote(port.port, "resume", "exec", "import tech; print(len(tech.events(5)))")
    assert r.returncode == 0 and int(r.stdout.strip()) >= 1, r.stdout + r.stderr
    r = _mpremote(port.port, "resume", "exec", "tech.show(tech.status())")
    assert "meter_id: " + METER_ID in r.stdout and "\nticks: " in r.stdout, r.stdout


def test_a_wrong_setting_is_refused_with_its_field_and_logged(meter):
    port, d = meter
    r = _mpremote(port.port, "resume", "exec", "tech.set('low_credit', 'lots')")
    assert r.returncode != 0
    assert "refused: low_credit" in r.stdout + r.stderr
    assert _eval(port.port, "tech.settings()['low_credit']") == "2.00"
    rec = _eval(port.port, "tech.audit(1)")[0]
    assert rec["op"] == "set" and rec["result"] == "refused" and rec["new"] == "lots"
    # a right one is applied and stored in the settings file
    assert _eval(port.port, "tech.set('low_credit', '3.50')") == {"low_credit": "3.50"}
    assert json.loads((d / "settings.json").read_text())["low_credit"] == "3.50"
    assert _eval(port.port, "tech.audit(2)")[1]["result"] == "ok"
    audit = (d / "audit.log").read_text().splitlines()  # beside the settings file
    assert [json.loads(x)["result"] for x in audit] == ["refused", "ok"]
    # the meter kept running through all of it
    assert _eval(port.port, "tech.status()['errors']") == 0


def test_file_commands_and_the_friendly_prompt(meter):
    port, d = meter
    r = _mpremote(port.port, "resume", "exec", "import os; print(os.getcwd())")
    assert r.returncode == 0, r.stderr
    ls = _mpremote(port.port, "resume", "fs", "ls", str(d))
    assert ls.returncode == 0 and "settings.json" in ls.stdout, ls.stdout + ls.stderr
    # typed at the prompt, as over `mpremote repl`: a dict a line
    with socket.create_connection(("127.0.0.1", port.port)) as s:
        s.sendall(b"\x02")  # Ctrl-B: a fresh friendly prompt
        time.sleep(0.3)
        s.sendall(b"tech.status()\r")
        got = b""
        end = time.monotonic() + 10
        while b"ticks: " not in got and time.monotonic() < end:
            s.settimeout(1)
            try:
                got += s.recv(4096)
            except TimeoutError:
                pass
    assert b"balance: " in got and b"meter_id: " + METER_ID.encode() in got
