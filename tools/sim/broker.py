"""A real mosquitto broker on 127.0.0.1 and a free port, for the tests and the bench.

    with Broker() as b:                   # tests: the `broker` fixture (tests/broker.py)
        connect to b.host, b.port; b.log() is the broker's log so far

The broker runs from a temporary directory holding its config (one listener on
127.0.0.1, anonymous clients, no persistence) and its log file; stop() terminates it
(kill after 5 s) and removes the directory. mosquitto is taken from PATH or
/usr/sbin/mosquitto (Debian installs it there, outside a user's PATH); when it is
missing, start() raises BrokerError with the install hint.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
INSTALL_HINT = (
    "mosquitto not found on PATH or at /usr/sbin/mosquitto: the MQTT tests need a real "
    "broker; install it (Debian/Ubuntu: apt-get install mosquitto)"
)


class BrokerError(RuntimeError):
    """mosquitto is missing or did not start."""


def find_mosquitto():
    """Path of the mosquitto binary, or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    return None


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process: start() / stop(), or a context manager."""

    def __init__(self, host="127.0.0.1", port=None, exe=None):
        self.host = host
        self.port = port
        self.exe = exe
        self.proc = None
        self.dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def log_path(self):
        return os.path.join(self.dir, "mosquitto.log")

    def log(self):
        """The broker's log so far ("" before it wrote one)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def _config(self, port):
        # `user`: mosquitto started as root drops to the user named here (default
        # "mosquitto", who could not write our log); ignored when not root.
        return "\n".join(
            (
                "listener %d %s" % (port, self.host),
                "allow_anonymous true",
                "persistence false",
                "log_dest file %s" % self.log_path,
                "log_type all",
                "connection_messages true",
                "user %s" % pwd.getpwuid(os.getuid()).pw_name,
                "",
            )
        )

    def start(self):
        self.exe = self.exe or find_mosquitto()
        if self.exe is None:
            raise BrokerError(INSTALL_HINT)
        self.dir = tempfile.mkdtemp(prefix="mosquitto-")
        fixed = self.port is not None
        for attempt in range(1 if fixed else 3):  # a free port can be taken meanwhile
            port = self.port if fixed else free_port(self.host)
            conf = os.path.join(self.dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(self._config(port))
            with open(os.path.join(self.dir, "stderr.txt"), "wb") as err:
                self.proc = subprocess.Popen(
                    [self.exe, "-c", conf],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            deadline = time.monotonic() + START_DEADLINE_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _accepts(self.host, port):
                    self.port = port
                    return self
                time.sleep(0.05)
            why = "exited with %s" % self.proc.returncode
            if self.proc.poll() is None:
                why = "did not accept connections within %g s" % START_DEADLINE_S
            self._kill()
        err = ""
        try:
            with open(os.path.join(self.dir, "stderr.txt"), errors="replace") as f:
                err = f.read()
        except OSError:
            pass
        detail = (err + self.log())[-2000:]
        self._cleanup()
        raise BrokerError(
            "mosquitto (%s) %s after %d tries:\n%s" % (self.exe, why, attempt + 1, detail)
        )

    def _kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_DEADLINE_S)
        self.proc = None

    def _cleanup(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stop(self):
        """Terminate the broker (kill after 5 s) and remove its directory."""
        self._kill()
        self._cleanup()
