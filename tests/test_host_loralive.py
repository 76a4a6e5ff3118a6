"""The live meter's LoRaWAN mode end to end against a tiny air server in the test.

tools/sim/live.py runs the firmware under `micropython` in real time with the RAK3172
model as its LoRaWAN modem; the model's network side is a real loopback TCP connection
speaking the air protocol (JSON lines: join/joined, up/acked, down). The server here
accepts the join, sends a 9-byte compact token as a class C downlink, acknowledges the
confirmed uplinks and reads the ack uplink back under the meter's key, as a back office
behind a network server would.
"""

import binascii
import json
import socket
import threading
import time

from firmware.tokens import keys
from firmware.comms.lora import payload as lp
from firmware.tokens import codes as rc
from tools.sim import tokenmint as mint
from tools.sim.live_host import LiveMeter

VK = bytes(range(32))
METER_ID = "4711003"
DEV_EUI = "70B3D57ED0000002"
JOIN_EUI = "0000000000000001"
APPKEY = "00112233445566778899AABBCCDDEEFF"


class AirServer:
    """One device at a time: answers joins (joined: self.accept), acks confirmed uplinks,
    records every message; send() writes a line to the device's connection."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.accept = True
        self.got = []  # messages from the device, in order
        self.conns = 0
        self.conn = None
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.srv.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            self.conns += 1
            self.conn = conn
            threading.Thread(target=self._device, args=(conn,), daemon=True).start()

    def _device(self, conn):
        buf = b""
        conn.settimeout(0.2)
        while not self.stop:
            try:
                d = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                return
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                with self.lock:
                    self.got.append(msg)
                if "join" in msg:
                    self.send({"joined": self.accept}, conn)
                elif "up" in msg and msg["up"]["confirmed"]:
                    self.send({"acked": msg["up"]["fcnt"]}, conn)

    def send(self, obj, conn=None):
        (conn or self.conn).sendall(json.dumps(obj).encode() + b"\n")

    def ups(self):
        with self.lock:
            return [m["up"] for m in self.got if "up" in m]

    def close(self):
        self.stop = True
        self.srv.close()


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def test_live_meter_over_lorawan_credits_a_downlinked_token_and_acks_it(tmp_path):
    air = AirServer()
    key = keys.MeterKey(keys.derive_meter_key(VK, int(METER_ID)))
    token = mint.compact_credit(key, 31, 2500)
    lora = {
        "netserver": ("127.0.0.1", air.port),
        "dev_eui": DEV_EUI,
        "join_eui": JOIN_EUI,
        "appkey": APPKEY,
        "duty_div": 0,  # the stand-in's air is free: no 1 % wait between uplinks
        "lora_model": {"tx_ms": 300},
    }
    air.accept = False  # the first join is refused: the model joins again
    try:
        with LiveMeter(str(tmp_path / "meter"), None, VK, METER_ID, lorawan=lora) as m:
            _wait(lambda: air.conns >= 1 and any("join" in g for g in air.got))
            air.accept = True
            st = m.wait(lambda s: s.get("online"), timeout=30)
            joins = [g["join"] for g in air.got if "join" in g]
            assert joins[0] == {"dev_eui": DEV_EUI, "join_eui": JOIN_EUI}
            assert len(joins) >= 2 and st["lora_model"]["air_opens"] >= 1
            assert APPKEY not in json.dumps(st) and APPKEY not in json.dumps(air.got)
            _wait(lambda: len(air.ups()) >= 2)  # the state and the meter reading
            air.send({"down": {"port": lp.TOPUP_PORT, "data": lp.compact_bytes(token).hex()}})
            rx = lp.Receiver(key.msg_mac(), keys.meter_id_bytes(int(METER_ID)))

            def acks():
                out = []
                ups = air.ups()
                for u in ups[len(decoded) + len(repeats) :]:
                    if u["data"] in [d[0]["data"] for d in decoded]:
                        repeats.append(u)  # a retry keeps its bytes: the receiver drops it
                        continue
                    decoded.append((u, rx.decode(binascii.unhexlify(u["data"]))))
                for u, f in decoded:
                    if f["type"] == "ack":
                        out.append((u, f))
                return out

            decoded, repeats = [], []
            _wait(lambda: acks())
            u, f = acks()[0]
            assert (f["code"], f["token16"], f["balance"]) == (rc.ACCEPT, 31, 2500)
            assert u["port"] == lp.UPLINK_PORT and u["confirmed"] and u["dev_eui"] == DEV_EUI
            assert [d[0]["fcnt"] for d in decoded] == list(range(len(decoded))) and not repeats
            st = m.wait(lambda s: s["comms"]["acks"] == 1)
            assert st["credited"] == 2500 and st["balance"] == "25.00"
            assert st["errors"] == 0 and st["lora_model"]["air_bad"] == 0
            # the same downlink again (a network retry): used, nothing credited
            air.send({"down": {"port": lp.TOPUP_PORT, "data": lp.compact_bytes(token).hex()}})
            _wait(lambda: len(acks()) == 2)
            f = acks()[1][1]
            assert (f["code"], f["token16"]) == (rc.USED, 31)
            st = m.wait(lambda s: s["comms"]["acks"] == 2 and s["queued"] == 0)
            assert st["credited"] == 2500
            # the network side goes away: the model sees the drop; after a modem reboot
            # the join opens a new connection and top-ups flow again
            air.conn.shutdown(socket.SHUT_RDWR)
            m.wait(lambda s: s["lora_model"]["air_drops"] == 1)
            m.fault("reboot")
            st = m.wait(lambda s: s["modem"]["resets"] == 1 and s["online"], timeout=30)
            assert air.conns == 2 and st["lora_model"]["joins"] == 2
            again = mint.compact_credit(key, 32, 100)
            air.send({"down": {"port": lp.TOPUP_PORT, "data": lp.compact_bytes(again).hex()}})
            _wait(lambda: len(acks()) == 3)
            f = acks()[2][1]
            assert (f["code"], f["token16"], f["balance"]) == (rc.ACCEPT, 32, 2600)
    finally:
        air.close()
