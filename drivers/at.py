"""AT command engine over a UART: one command at a time, finals, prompts, raw reads, URCs.

Owns the byte stream to and from a cellular modem; knows nothing of TCP or SIM cards:

    at = ATEngine(uart, clock)
    at.urc("+CIPRXGET: 1,", on_data)          # unsolicited lines, even mid-reply
    await at.init()                            # AT until OK, ATE0, AT+CMEE=1
    r = await at.command("AT+CSQ")             # r.lines == ["+CSQ: 17,99"]
    r = await at.command("AT+CIPSEND=0,5", data=b"hello", done="+CIPSEND:")
    r = await at.command("AT+CIPRXGET=2,0,512", resp="+CIPRXGET: 2,", raw=lambda l: n)

Never blocks the loop: the UART is polled (`any()`/`read()`) between short
`clock.sleep_ms(poll_ms)` waits, and every wait has a deadline. Each command waits for
a final result: `OK`, `SEND OK` (success); `ERROR`, `+CME ERROR: n`, `+CMS ERROR: n`,
`SEND FAIL`, `NO CARRIER`, `COMMAND NOT SUPPORT` raise ATCommandError; no final in time
raises ATTimeout. `done="+X:"` makes an information line the final (SIMCom sends `OK`
and then `+CIPSEND: ...`), `data=` waits for the `>` prompt (it has no line end) and
writes the bytes, `raw=fn` reads `fn(line)` raw bytes after a header line (binary-safe
`+CIPRXGET: 2,...` / `+QIRD: n`). A URC handler may call `read_raw(n, sink)` for URCs
followed by data.

Lines are classified in this order: the command's own information lines (prefix `resp`,
by default `+CMD:` taken from the command), boot banners, registered URC prefixes,
finals, the echo of the command, anything else (kept in the reply while a command runs,
otherwise counted as noise and dropped). Lines that are not UTF-8 are noise. A line
longer than `max_line` is dropped whole, so a stream with no line end cannot eat the
heap. A boot banner (`RDY`, `*ATREADY`, and `+CPIN: READY`, `SMS DONE`, `PB DONE` when
not inside the burst of an earlier boot) means the modem rebooted: the command in flight
fails with ATReset and `on_reset(line)` tells the owner that every link state is gone.
Other dialects add their own: `errors=("AT_",)` (more error finals, by prefix) and
`banners=(...)` (more first lines of a boot, by prefix).

A command that timed out leaves a debt: its late final (replies come in order) is
dropped when it arrives instead of completing the next command, and while a reply is
owed `+CPIN: READY` is not taken for a banner; debts expire after `owed_ms`. `sync()`
drains the late OKs of its own timed-out `AT` attempts before it returns.
"""

try:
    from micropython import const
except ImportError:  # CPython, for host tests

    def const(x):
        return x


_CR = const(13)
_LF = const(10)
_PROMPT = const(62)  # '>'

_OK_FINALS = ("OK", "SEND OK")
_ERR_FINALS = ("ERROR", "SEND FAIL", "NO CARRIER", "COMMAND NOT SUPPORT", "NO ANSWER", "BUSY")
_STRONG_BANNERS = ("RDY", "*ATREADY")  # the first line a (re)booting modem prints
_WEAK_BANNERS = ("+CPIN: READY", "SMS DONE", "PB DONE", "+QIND: SMS DONE", "+QIND: PB DONE")


class ATError(Exception):
    """Base of the engine's errors; `cmd` is the command that failed."""

    def __init__(self, msg, cmd=None):
        super().__init__(msg)
        self.cmd = cmd


class ATCommandError(ATError):
    """The modem answered with an error final: `kind` is "ERROR", "CME", "CMS", "SEND FAIL",
    ...; `code` the +CME/+CMS number (None when verbose or absent); `text` the line."""

    def __init__(self, cmd, line):
        kind = line
        code = None
        if line.startswith("+CME ERROR") or line.startswith("+CMS ERROR"):
            kind = line[1:4]
            v = line[11:].strip()
            if v.isdigit():
                code = int(v)
        super().__init__("%s: %s" % (cmd, line), cmd)
        self.kind = kind
        self.code = code
        self.text = line


class ATTimeout(ATError):
    """No final result (or no '>' prompt) before the command's deadline."""


class ATBusy(ATTimeout):
    """Another command held the engine until this command's deadline passed."""


class ATReset(ATError):
    """The modem printed a boot banner while the command was in flight."""


class Response:
    """A command's reply: information lines, raw bytes read after header lines, the final."""

    def __init__(self):
        self.lines = []
        self.data = bytearray()
        self.final = None

    def first(self, prefix):
        """The first line starting with prefix, prefix removed and stripped; else None."""
        for l in self.lines:
            if l.startswith(prefix):
                return l[len(prefix) :].strip()
        return None


def ints(text):
    """'2,0,4,0' -> [2, 0, 4, 0]; fields that are not integers become None."""
    out = []
    for f in text.split(","):
        f = f.strip().strip('"')
        if f.startswith("-"):
            out.append(-int(f[1:]) if f[1:].isdigit() else None)
        else:
            out.append(int(f) if f.isdigit() else None)
    return out


def first_int(text):
    """The first field of ints(text): '3,1' -> 3; None when absent or not an integer."""
    v = ints(text)
    return v[0] if v else None


class _Pending:
    def __init__(self, cmd, resp, done, raw, prompt):
        self.cmd = cmd
        self.resp = resp
        self.done = done
        self.raw = raw
        self.want_prompt = prompt
        self.prompt = False
        self.ok = False
        self.reply = Response()
        self.error = None  # an exception to raise
        self.finished = False


class ATEngine:
    def __init__(
        self,
        uart,
        clock,
        poll_ms=5,
        timeout_ms=5000,
        max_line=256,
        read_chunk=256,
        write_chunk=128,
        baud=0,
        boot_window_ms=30000,
        owed_ms=20000,
        on_reset=None,
        errors=(),
        banners=(),
    ):
        self.uart = uart
        self.clock = clock
        self.poll_ms = poll_ms
        self.timeout_ms = timeout_ms
        self.max_line = max_line
        self.read_chunk = read_chunk
        self.write_chunk = write_chunk
        self.baud = baud  # > 0: pace data writes at this rate so uart.write never stalls
        self.boot_window_ms = boot_window_ms
        self.owed_ms = owed_ms  # how long a timed-out command's late reply is expected
        self.on_reset = on_reset
        self.errors = errors  # more error finals, by prefix (RUI3: "AT_")
        self.banners = banners  # more first lines of a boot, by prefix (other dialects)
        self._urcs = []  # [(prefix, handler)]
        self._line = bytearray()
        self._discard = False
        self._skip_lf = False
        self._raw_left = 0
        self._raw_sink = None
        self._raw_buf = None
        self._pending = None
        self._busy = False
        self._last_cmd = None
        self._last_banner = None  # ticks of the last boot banner
        self._owed = []  # ticks of timed-out commands whose final has not come yet
        # statistics, for telemetry and tests
        self.noise = 0
        self.overflows = 0
        self.strays = 0
        self.timeouts = 0
        self.resets = 0
        self.urc_count = 0

    # -- registration -------------------------------------------------------------

    def urc(self, prefix, handler):
        """Call handler(line) for unsolicited lines starting with prefix (first match wins,
        so register the more specific prefix first)."""
        self._urcs.append((prefix, handler))

    def read_raw(self, n, sink):
        """From a URC handler: the next n bytes are raw data; sink(bytes) gets them."""
        if n > 0:
            self._raw_left = n
            self._raw_sink = sink
            self._raw_buf = bytearray()

    def hold_banners(self):
        """Boot-like lines expected now (after a PIN entry) are not a reboot."""
        self._last_banner = self.clock.ticks_ms()

    @property
    def busy(self):
        return self._busy

    # -- reading --------------------------------------------------------------------

    def poll(self):
        """Read and process what the UART holds now (bounded); never waits."""
        uart = self.uart
        for _ in range(8):
            n = uart.any()
            if not n:
                return
            b = uart.read(n if n < self.read_chunk else self.read_chunk)
            if not b:
                return
            self._process(b)

    def _process(self, b):
        i = 0
        n = len(b)
        mv = memoryview(b)
        while i < n:
            if self._skip_lf:
                self._skip_lf = False
                if b[i] == _LF:
                    i += 1
                    continue
            if self._raw_left:
                k = self._raw_left if self._raw_left < n - i else n - i
                self._raw_buf.extend(mv[i : i + k])
                self._raw_left -= k
                i += k
                if not self._raw_left:
                    sink, buf = self._raw_sink, self._raw_buf
                    self._raw_sink = self._raw_buf = None
                    sink(bytes(buf))
                continue
            p = self._pending
            if not self._line and b[i] == _PROMPT and p is not None and p.want_prompt:
                p.prompt = True
                p.want_prompt = False
                i += 1
                if i < n and b[i] == 32:
                    i += 1
                continue
            j = b.find(b"\r", i)
            k = b.find(b"\n", i)
            if j < 0 or (0 <= k < j):
                j = k
            end = n if j < 0 else j
            if not self._discard:
                if len(self._line) + end - i > self.max_line:
                    self._discard = True
                    self._line = bytearray()
                    self.overflows += 1
                else:
                    self._line.extend(mv[i:end])
            if j < 0:
                return
            i = j + 1
            self._skip_lf = b[j] == _CR  # CR LF is one line end (raw data may follow)
            if self._discard:
                self._discard = False
                continue
            if self._line:
                raw = self._line
                self._line = bytearray()
                try:
                    line = bytes(raw).decode().strip()
                except UnicodeError:
                    self.noise += 1
                    continue
                if line:
                    self._on_line(line)

    def _on_line(self, line):
        p = self._pending
        if p is not None and p.finished:
            p = None  # its final came (maybe earlier in this same read): lines now are not its
        if p is not None and p.resp and line.startswith(p.resp):
            p.reply.lines.append(line)
            if p.raw is not None:
                self.read_raw(p.raw(line), p.reply.data.extend)
            if p.done and line.startswith(p.done):
                self._finish(p, line, None)
            return
        owed = self._owed
        if owed:
            clk = self.clock
            now = clk.ticks_ms()
            while owed and clk.ticks_diff(now, owed[0]) > self.owed_ms:
                owed.pop(0)  # that reply is not coming any more
        if self._banner(line):
            return
        for prefix, handler in self._urcs:
            if line.startswith(prefix):
                self.urc_count += 1
                handler(line)
                return
        if owed:
            # a late reply of a command that timed out: replies come in order, so its
            # final comes before the current command's and is not taken for it
            if self._final(line):
                owed.pop(0)
                self.strays += 1
            else:
                self.noise += 1
            return
        if p is None:
            if line == self._last_cmd or self._final(line):
                self.strays += 1
            else:
                self.noise += 1
            return
        if p.done and line.startswith(p.done):
            p.reply.lines.append(line)
            self._finish(p, line, None)
        elif line in _OK_FINALS:
            if p.done:
                p.ok = True
            else:
                self._finish(p, line, None)
        elif self._final(line):
            self._finish(p, line, ATCommandError(p.cmd, line))
        elif line == p.cmd or line == self._last_cmd:
            pass  # echo (ATE1 after a reboot)
        else:
            p.reply.lines.append(line)

    def _banner(self, line):
        strong = False
        for b in _STRONG_BANNERS + self.banners:
            if line.startswith(b):
                strong = True
        if not strong:
            weak = False
            for b in _WEAK_BANNERS:
                if line == b:
                    weak = True
            if not weak or self._owed:
                return False  # with replies owed, "+CPIN: READY" may be a late answer
        clk = self.clock
        now = clk.ticks_ms()
        last = self._last_banner
        self._last_banner = now
        if not strong and last is not None and clk.ticks_diff(now, last) < self.boot_window_ms:
            return True  # more lines of the boot already reported
        self.resets += 1
        self._owed = []
        self._raw_left = 0
        self._raw_sink = self._raw_buf = None
        p = self._pending
        if p is not None:
            self._finish(p, line, ATReset("modem rebooted (%s)" % line, p.cmd))
        if self.on_reset is not None:
            self.on_reset(line)
        return True

    def _final(self, line):
        if _is_final(line):
            return True
        for e in self.errors:
            if line.startswith(e):
                return True
        return False

    def _finish(self, p, line, error):
        p.reply.final = line
        p.error = error
        p.finished = True

    # -- commands -------------------------------------------------------------------

    async def command(
        self,
        cmd,
        timeout_ms=None,
        resp=None,
        done=None,
        data=None,
        raw=None,
        prompt_ms=None,
        owe=True,
    ):
        """Send `cmd` (no line end) and wait for its final result; returns a Response.

        resp: prefix of this command's information lines (default `+CMD:` from the
        command; "" or False: none, every `+...` line is a URC). done: a prefix whose line
        completes the command (OK alone then does not). data: bytes to write after the
        `>` prompt (prompt_ms to see it). raw: fn(line) -> n raw bytes following an
        information line. owe: after a timeout expect this command's final late (and
        drop it then); False for commands a modem may drop unanswered (AT while booting).
        Raises ATCommandError, ATTimeout (ATBusy), ATReset.
        """
        clk = self.clock
        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        start = clk.ticks_ms()
        while self._busy:
            if clk.ticks_diff(clk.ticks_ms(), start) >= timeout_ms:
                raise ATBusy("engine busy", cmd)
            self.poll()
            await clk.sleep_ms(self.poll_ms)
        self._busy = True
        try:
            if resp is None:
                resp = _prefix(cmd)
            p = _Pending(cmd, resp or None, done, raw, data is not None)
            p.owe = owe
            self.poll()  # URCs that arrived before the command are not its reply
            self._pending = p
            self._last_cmd = cmd
            self.uart.write(cmd.encode() + b"\r")
            if data is not None:
                limit = prompt_ms if prompt_ms is not None else timeout_ms
                if not await self._wait(p, start, limit, True):
                    raise self._timeout(p, "no '>' prompt")
                if not p.finished:
                    await self._write_data(data, p)
            if not await self._wait(p, start, timeout_ms, False):
                raise self._timeout(p, "no final result")
            if p.error is not None:
                raise p.error
            return p.reply
        finally:
            self._pending = None
            self._busy = False

    async def _wait(self, p, start, limit, prompt):
        clk = self.clock
        while True:
            self.poll()
            if p.finished or (prompt and p.prompt):
                return True
            if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                return False
            await clk.sleep_ms(self.poll_ms)

    def _timeout(self, p, what):
        self.timeouts += 1
        if p.owe:
            self._owed.append(self.clock.ticks_ms())  # its late final is not the next's
        self._raw_left = 0  # a binary read cut short: the rest is noise, not data
        self._raw_sink = self._raw_buf = None
        return ATTimeout("%s: %s" % (p.cmd, what), p.cmd)

    async def _write_data(self, data, p):
        clk = self.clock
        mv = memoryview(data)
        i = 0
        n = len(data)
        step = self.write_chunk
        while i < n:
            if p.finished:  # an error or a reboot came back mid-data
                return
            k = step if n - i > step else n - i
            self.uart.write(mv[i : i + k])
            i += k
            if i < n:
                ms = (k * 10000) // self.baud if self.baud else 0
                self.poll()
                await clk.sleep_ms(ms)

    async def sync(self, timeout_ms=10000, attempt_ms=500):
        """Send `AT` until the modem answers OK (it drops commands while booting); each
        attempt waits longer (x2, up to 4 s) in case the modem is just slow."""
        clk = self.clock
        start = clk.ticks_ms()
        late = False
        while True:
            left = timeout_ms - clk.ticks_diff(clk.ticks_ms(), start)
            if left <= 0:
                raise ATTimeout("modem does not answer AT", "AT")
            try:
                await self.command(
                    "AT", timeout_ms=attempt_ms if attempt_ms < left else left, owe=False
                )
                if late:
                    await self._drain(attempt_ms, start, timeout_ms)
                return
            except ATReset:
                pass  # it just booted: ask again
            except ATCommandError:
                await clk.sleep_ms(attempt_ms)  # garbage before the AT: try again
            except ATTimeout:
                late = True
                if attempt_ms < 4000:
                    attempt_ms *= 2

    async def _drain(self, quiet_ms, start, limit):
        """After AT attempts timed out, one OK may be an earlier attempt's: let the other
        late OKs come and drop them (until none for quiet_ms) so that no later command
        takes one for its own."""
        clk = self.clock
        self._busy = True
        try:
            t = clk.ticks_ms()
            seen = self.strays
            while clk.ticks_diff(clk.ticks_ms(), t) < quiet_ms:
                if clk.ticks_diff(clk.ticks_ms(), start) >= limit:
                    return
                self.poll()
                if self.strays != seen:
                    seen = self.strays
                    t = clk.ticks_ms()
                await clk.sleep_ms(self.poll_ms)
        finally:
            self._busy = False

    async def init(self, timeout_ms=10000):
        """Sync, echo off, numeric +CME errors. Run again after every modem reset."""
        await self.sync(timeout_ms)
        await self.command("ATE0")
        await self.command("AT+CMEE=1")


def _prefix(cmd):
    """'AT+CSQ' -> '+CSQ:', 'AT+CREG?' -> '+CREG:', 'AT+CPIN="1234"' -> '+CPIN:'."""
    if len(cmd) < 4 or cmd[2] not in "+*^$#%":
        return None
    i = 3
    n = len(cmd)
    while i < n and cmd[i] not in "=?":
        i += 1
    return cmd[2:i] + ":"


def _is_final(line):
    return line in _OK_FINALS or _is_error(line)


def _is_error(line):
    return line in _ERR_FINALS or line.startswith("+CME ERROR") or line.startswith("+CMS ERROR")
