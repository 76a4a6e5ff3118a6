"""A simulated UART between the firmware and a peripheral model (the cellular modem).

The firmware side has machine.UART's calls with `timeout=0`: `write(buf)`, `read([n])`,
`readinto(buf[, n])`, `any()`; reads never wait and return None when nothing is there.
The model side calls `feed(bytes)` to send bytes toward the firmware and receives what
the firmware writes through `model.on_rx(bytes)`; `model.poll()` runs on every firmware
call, so a model needs no task of its own: it advances its timers and its network I/O
whenever the firmware looks at the UART (with a virtual or a real clock alike).

With `baud` > 0 (and a clock) bytes fed reach the firmware at the line rate (10 bits a
byte), and at most `rxbuf` bytes wait unread: the excess is lost and counted in
`overruns`, like the ESP32's UART ring buffer when the firmware does not poll in time.
"""


class SimUART:
    def __init__(self, clock=None, baud=0, rxbuf=8192):
        self.clock = clock
        self.baud = baud
        self.rxbuf = rxbuf
        self.model = None
        self._rx = bytearray()  # readable by the firmware now
        self._line = bytearray()  # still on the wire (baud pacing)
        self._t = None  # ticks when the wire last delivered
        self.overruns = 0
        self.written = 0
        self.delivered = 0

    def attach(self, model):
        self.model = model

    # -- model side -------------------------------------------------------------------

    def feed(self, data):
        """Bytes from the peripheral toward the firmware."""
        if self.baud and self.clock is not None:
            if not self._line:
                self._t = self.clock.ticks_ms()
            self._line.extend(data)
        else:
            self._deliver(data)

    def _deliver(self, data):
        room = self.rxbuf - len(self._rx)
        if len(data) > room:
            self.overruns += len(data) - room
            data = data[:room] if room > 0 else b""
        self._rx.extend(data)
        self.delivered += len(data)

    def _advance(self):
        if self.model is not None:
            self.model.poll()
        if self._line:
            clk = self.clock
            now = clk.ticks_ms()
            n = clk.ticks_diff(now, self._t) * self.baud // 10000
            if n > 0:
                chunk = self._line[:n]
                self._line[:n] = b""
                self._t = now
                self._deliver(chunk)

    # -- firmware side (machine.UART) -----------------------------------------------

    def any(self):
        self._advance()
        return len(self._rx)

    def read(self, n=None):
        self._advance()
        if not self._rx:
            return None
        if n is None or n > len(self._rx):
            n = len(self._rx)
        d = bytes(self._rx[:n])
        self._rx[:n] = b""
        return d

    def readinto(self, buf, n=None):
        d = self.read(len(buf) if n is None else n)
        if d is None:
            return None
        buf[: len(d)] = d
        return len(d)

    def write(self, buf):
        data = bytes(buf)
        self.written += len(data)
        if self.model is not None:
            self.model.on_rx(data)
            self.model.poll()
        return len(data)
