"""A LoRaWAN network server stand-in for the tests and the simulator: the simulated modem's
"air" on a loopback TCP port, ChirpStack v4's MQTT integration on a real broker (paho).

    ns = NetServer(broker_port=1883, application_id=APP, devices={"70b3...": "meter-1"})
    ns.start()                       # ns.port: the air port the modem model connects to
    ns.lose_downlinks = 1            # faults, any time (below)
    ns.stop()

    python -m tools.sim.netserver --broker-port 1883 --app APP [--port 0] [--device EUI]

The air protocol (JSON lines, both ways; shared with the modem model):
    model -> server  {"join": {"dev_eui": "<16 hex>", "join_eui": "<16 hex>"}}
    server -> model  {"joined": true} or {"joined": false}
    model -> server  {"up": {"dev_eui": "...", "port": N, "data": "<hex>",
                             "confirmed": bool, "fcnt": N, "dr": N}}
    server -> model  {"acked": N}                      (a confirmed uplink, N its fcnt)
    server -> model  {"down": {"port": N, "data": "<hex>"}}   (class C: sent at once)

MQTT (ChirpStack v4 topics and JSON, docs/modems.md "ChirpStack and The Things Stack"):
    application/<app>/device/<devEui>/event/join    on a join
    application/<app>/device/<devEui>/event/up      each uplink: deduplicationId, time,
        deviceInfo {tenantId, tenantName, applicationId, applicationName, deviceProfileId,
        deviceProfileName, deviceName, devEui, tags}, devAddr, adr, dr, fCnt, fPort,
        confirmed, data (base64), rxInfo [{gatewayId, uplinkId, rssi, snr, ...}], txInfo
    application/<app>/device/<devEui>/command/down  taken: {"devEui", "confirmed", "fPort",
        "data"}; a devEui that is not the topic's, a port 0 or a payload longer than the
        region allows at `downlink_dr` is refused with an event/log (code
        DOWNLINK_PAYLOAD_SIZE for the size); else queued and sent to the device at once
        when it is on the air (after its join when it is not), event/txack once sent
Unknown devices (not in `devices`, when it is given) are refused at join; an uplink from
a device not joined on that connection is dropped (counted in `strays`).

Faults (attributes): refuse_joins (n: the next n joins are refused; -1: all),
lose_downlinks (n: the next n downlinks are never sent: lost on the air),
duplicate_downlinks (n: the next n are sent twice: a network retry).
Counters (`stats`): joins, join_refusals, uplinks, acked, downlinks, lost, duplicated,
refused_downlinks, strays.
"""

import argparse
import base64
import binascii
import datetime
import json
import secrets
import signal
import socket
import sys
import threading
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

TENANT = "52f14cd4-c6f1-4fbd-8f87-4025e1d49242"
PROFILE = "3ab59a61-b5c8-4ab2-8a0f-3a3b0f0b0d52"
GATEWAY = "0016c001f153a14c"
# largest downlink FRMPayload per downlink DR (docs/modems.md "Payload limits":
# LoRaMac-node's tables).
# Kept here, apart from firmware/comms/lora/payload.py: tools/sim imports nothing from firmware/.
DOWNLINK_MAX = {
    "EU868": (51, 51, 51, 115, 242, 242, 242),
    "US915": (0, 0, 0, 0, 0, 0, 0, 0, 53, 129, 242, 242, 242, 242),
    "AU915": (0, 0, 0, 0, 0, 0, 0, 0, 53, 129, 242, 242, 242, 242),
    "AS923": (51, 51, 115, 115, 242, 242, 242),
    "IN865": (51, 51, 51, 115, 242, 242),
}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class _Air:
    """One device's connection: a line reader and a locked writer."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.dev_eui = None  # after a successful join

    def send(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        with self.lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False


class NetServer:
    def __init__(
        self,
        broker_port,
        application_id,
        devices=None,
        broker_host="127.0.0.1",
        host="127.0.0.1",
        port=0,
        region="EU868",
        downlink_dr=None,
        rssi=-70,
        snr=9.0,
        log=None,
    ):
        self.broker = (broker_host, broker_port)
        self.app = application_id
        self.devices = None if devices is None else {k.lower(): v for k, v in devices.items()}
        self.host = host
        self.port = port
        self.region = region
        self.downlink_dr = downlink_dr
        self.rssi = rssi
        self.snr = snr
        self.log = log or (lambda line: None)
        self.refuse_joins = 0
        self.lose_downlinks = 0
        self.duplicate_downlinks = 0
        self.stats = dict.fromkeys(
            ("joins", "join_refusals", "uplinks", "acked", "downlinks", "lost", "duplicated",
             "refused_downlinks", "strays"), 0
        )  # fmt: skip
        self.downlinks = []  # (dev_eui, port, bytes) as sent to a device
        self._lock = threading.RLock()
        self._air = {}  # dev_eui -> _Air
        self._queue = {}  # dev_eui -> [(port, bytes)] waiting for the device
        self._addr = {}  # dev_eui -> devAddr
        self._fcnt_down = {}
        self._listener = None
        self._threads = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="netserver-" + secrets.token_hex(4)
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message

    # -- life ------------------------------------------------------------------------

    def start(self, timeout=10.0):
        self.client.connect(self.broker[0], self.broker[1], keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(timeout):
            self.client.loop_stop()
            raise RuntimeError("netserver: no SUBACK from the broker within %g s" % timeout)
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(8)
        ls.settimeout(0.2)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._spawn(self._accept_loop)
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            airs = list(self._air.values())
        for a in airs:
            try:
                a.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        if self._listener is not None:
            self._listener.close()
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _topic(self, eui, what):
        return "application/%s/device/%s/%s" % (self.app, eui, what)

    def _device_info(self, eui):
        name = (self.devices or {}).get(eui) or eui
        return {
            "tenantId": TENANT,
            "tenantName": "sim",
            "applicationId": self.app,
            "applicationName": "prepaid-meters",
            "deviceProfileId": PROFILE,
            "deviceProfileName": "meter class C",
            "deviceName": name,
            "devEui": eui,
            "tags": {},
        }

    # -- the air -----------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            self._spawn(self._serve, _Air(sock))

    def _serve(self, air):
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = air.sock.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._line(air, line)
        finally:
            with self._lock:
                if air.dev_eui is not None and self._air.get(air.dev_eui) is air:
                    del self._air[air.dev_eui]
            air.sock.close()

    def _line(self, air, line):
        try:
            obj = json.loads(line)
        except ValueError:
            self.stats["strays"] += 1
            self.log("netserver: not JSON on the air: %r" % line[:60])
            return
        if isinstance(obj, dict) and isinstance(obj.get("join"), dict):
            self._join(air, obj["join"])
        elif isinstance(obj, dict) and isinstance(obj.get("up"), dict):
            self._up(air, obj["up"])
        else:
            self.stats["strays"] += 1

    def _join(self, air, j):
        eui = str(j.get("dev_eui", "")).lower()
        with self._lock:
            ok = len(eui) == 16 and (self.devices is None or eui in self.devices)
            if ok and self.refuse_joins:
                ok = False
                if self.refuse_joins > 0:
                    self.refuse_joins -= 1
            if not ok:
                self.stats["join_refusals"] += 1
                self.log("netserver: join of %s refused" % eui)
                air.send({"joined": False})
                return
            old = self._air.get(eui)
            air.dev_eui = eui
            self._air[eui] = air
            self._addr[eui] = secrets.token_hex(4)
            self.stats["joins"] += 1
        if old is not None and old is not air:
            try:
                old.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        air.send({"joined": True})
        body = {
            "deduplicationId": str(uuid.uuid4()),
            "time": _now(),
            "deviceInfo": self._device_info(eui),
            "devAddr": self._addr[eui],
        }
        self.client.publish(self._topic(eui, "event/join"), json.dumps(body), qos=1)
        self.log("netserver: %s joined" % eui)
        self._flush(eui)

    def _up(self, air, u):
        eui = str(u.get("dev_eui", "")).lower()
        if air.dev_eui is None or eui != air.dev_eui:
            self.stats["strays"] += 1
            self.log("netserver: uplink from %s, not joined here: dropped" % eui)
            return
        try:
            data = binascii.unhexlify(u.get("data", ""))
            port = int(u["port"])
            fcnt = int(u.get("fcnt", 0))
        except (KeyError, TypeError, ValueError, binascii.Error):
            self.stats["strays"] += 1
            return
        dr = u.get("dr", 0)
        confirmed = bool(u.get("confirmed"))
        body = {
            "deduplicationId": str(uuid.uuid4()),
            "time": _now(),
            "deviceInfo": self._device_info(eui),
            "devAddr": self._addr.get(eui, "00000000"),
            "adr": True,
            "dr": dr,
            "fCnt": fcnt,
            "fPort": port,
            "confirmed": confirmed,
            "data": base64.b64encode(data).decode(),
            "rxInfo": [
                {
                    "gatewayId": GATEWAY,
                    "uplinkId": secrets.randbelow(1 << 16),
                    "rssi": self.rssi,
                    "snr": self.snr,
                    "channel": 0,
                    "context": "AAAAAA==",
                    "metadata": {"region_config_id": self.region.lower()},
                    "crcStatus": "CRC_OK",
                }
            ],
            "txInfo": {
                "frequency": 868100000,
                "modulation": {
                    "lora": {"bandwidth": 125000, "spreadingFactor": 12, "codeRate": "CR_4_5"}
                },
            },
        }
        self.stats["uplinks"] += 1
        self.client.publish(self._topic(eui, "event/up"), json.dumps(body), qos=1)
        if confirmed:
            self.stats["acked"] += 1
            air.send({"acked": fcnt})

    # -- downlinks ---------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self._topic("+", "command/down"), 1)

    def _on_message(self, client, userdata, msg):
        parts = msg.topic.split("/")
        eui = parts[3].lower() if len(parts) == 6 else ""
        try:
            obj = json.loads(msg.payload)
            port = obj["fPort"]
            data = base64.b64decode(obj.get("data", ""), validate=True)
            if str(obj.get("devEui", "")).lower() != eui:
                raise ValueError("devEui %r is not the topic's %r" % (obj.get("devEui"), eui))
            if type(port) is not int or not 0 < port < 224:
                raise ValueError("fPort must be 1..223")
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            return self._refuse(eui, "DOWNLINK_PAYLOAD", "downlink refused: %s" % e)
        if self.downlink_dr is not None:
            table = DOWNLINK_MAX.get(self.region, ())
            limit = table[self.downlink_dr] if 0 <= self.downlink_dr < len(table) else 0
            if len(data) > limit:
                return self._refuse(
                    eui, "DOWNLINK_PAYLOAD_SIZE", "payload of %d bytes exceeds %d at %s DR%d"
                    % (len(data), limit, self.region, self.downlink_dr),
                )  # fmt: skip
        with self._lock:
            self._queue.setdefault(eui, []).append((port, data))
        self._flush(eui)

    def _refuse(self, eui, code, text):
        self.stats["refused_downlinks"] += 1
        self.log("netserver: %s: %s" % (eui, text))
        body = {"time": _now(), "deviceInfo": self._device_info(eui), "level": "ERROR",
                "code": code, "description": text, "context": {}}  # fmt: skip
        self.client.publish(self._topic(eui, "event/log"), json.dumps(body), qos=1)

    def _flush(self, eui):
        """Class C: everything queued for the device goes now, if it is on the air."""
        with self._lock:
            air = self._air.get(eui)
            if air is None:
                return
            items, self._queue[eui] = self._queue.get(eui, []), []
            sends = []
            for port, data in items:
                if self.lose_downlinks:
                    self.lose_downlinks -= 1
                    self.stats["lost"] += 1
                    self.log("netserver: downlink to %s lost (fault)" % eui)
                    continue
                n = 1
                if self.duplicate_downlinks:
                    self.duplicate_downlinks -= 1
                    self.stats["duplicated"] += 1
                    n = 2
                sends += [(port, data)] * n
        for port, data in sends:
            msg = {"down": {"port": port, "data": binascii.hexlify(data).decode()}}
            if not air.send(msg):
                continue
            with self._lock:
                self.stats["downlinks"] += 1
                self.downlinks.append((eui, port, data))
                fc = self._fcnt_down[eui] = self._fcnt_down.get(eui, -1) + 1
            body = {"downlinkId": secrets.randbelow(1 << 31), "time": _now(),
                    "deviceInfo": self._device_info(eui), "queueItemId": str(uuid.uuid4()),
                    "fCntDown": fc, "gatewayId": GATEWAY}  # fmt: skip
            self.client.publish(self._topic(eui, "event/txack"), json.dumps(body), qos=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker-host", default="127.0.0.1")
    ap.add_argument("--broker-port", type=int, default=1883)
    ap.add_argument("--app", required=True, help="ChirpStack application id (a UUID)")
    ap.add_argument("--host", default="127.0.0.1", help="air: address to listen on")
    ap.add_argument("--port", type=int, default=0, help="air: TCP port (0: any free one)")
    ap.add_argument("--device", action="append", help="a DevEUI allowed to join (default: any)")
    ap.add_argument("--region", default="EU868")
    ap.add_argument("--downlink-dr", type=int, default=None)
    args = ap.parse_args(argv)
    devices = None if not args.device else dict.fromkeys(args.device)
    ns = NetServer(
        args.broker_port, args.app, devices, broker_host=args.broker_host, host=args.host,
        port=args.port, region=args.region, downlink_dr=args.downlink_dr,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    # Ctrl-C or SIGTERM asks for a clean stop, at any point from here on: a handler that
    # only sets an event, so no KeyboardInterrupt can land outside a try (exit 0 always)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ns.start()
    print("netserver: air on %s:%d" % (ns.host, ns.port), flush=True)
    while not stop.wait(0.5):
        pass
    ns.stop()


if __name__ == "__main__":
    main()
