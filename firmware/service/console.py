"""The technician's console: a REPL on the USB serial port that runs beside the meter.

    console = Console(write, {"tech": tech})   # write(bytes) to the port
    asyncio.create_task(console.run(reader))    # reader: async read(1) -> bytes

`on_session()` (optional) is called once, before the first command typed after the
console starts: the meter logs it as a console_session event, so the back office hears
that someone used the console.

While `main.py` runs the asyncio loop MicroPython's own REPL is not there, so this task
reads the port byte by byte and answers in two modes, the ones `mpremote` speaks:

- friendly: a `>>> ` prompt with echo, backspace and Ctrl-C (discard the line). A line
  is evaluated as an expression (a dict or list result is printed one item a line,
  anything else as its repr) or else executed as a statement. Ctrl-D does not restart
  the meter (it says so); Ctrl-A enters raw mode.
- raw (Ctrl-A): MicroPython's raw REPL as `mpremote` drives it: the code up to Ctrl-D
  is answered `OK`, its output, Ctrl-D, the error text, Ctrl-D and the `>` prompt;
  Ctrl-B returns to friendly mode. A raw-paste request is answered "not supported",
  which makes `mpremote` fall back to plain raw mode. A soft-reset request (Ctrl-D on
  an empty command) is answered `Ignored: soft reboot` and the raw prompt: the meter
  keeps running, so `mpremote exec` works with or without `resume`.

Commands run inside the loop: they must be short (the `tech` functions are; anything
slow is started as a task). The metering task keeps its schedule between bytes.
`micropython.kbd_intr(-1)` is set while the console runs so that a Ctrl-C from the port
(mpremote sends two before every command) reaches the console instead of raising
KeyboardInterrupt in the meter. A command's exception is reported, never raised: no
input typed here can stop the meter.
"""

import sys

FRIENDLY = 0
RAW = 1
PROMPT = b">>> "
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
MAX_COMMAND = 32768  # raw-mode bytes kept for one command; beyond it: an error

# the bytes the console acts on
_CTRL_A = 1  # raw mode (again: a fresh raw prompt)
_CTRL_B = 2  # friendly mode
_CTRL_C = 3  # drop the line or command
_CTRL_D = 4  # run the raw command (friendly: the meter keeps running)
_CTRL_E = 5  # the start of a raw-paste request: Ctrl-E 'A' Ctrl-A
_BS = 8
_LF = 10
_CR = 13
_SPACE = 32  # the first printable byte
_PASTE_A = 65  # 'A', the raw-paste request's second byte
_DEL = 127
# where a raw-paste request is (self._paste)
_PASTE_NONE = 0
_PASTE_E = 1  # Ctrl-E seen
_PASTE_EA = 2  # Ctrl-E 'A' seen


def format_exception(e):
    """The traceback text of `e` on either runtime."""
    try:
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        return buf.getvalue()
    except AttributeError:  # CPython
        import traceback

        return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def show(value):
    """The text a result is shown as: dict one `key: value` a line (sorted), list or tuple
    of dicts/lists one item a line, anything else its repr."""
    if isinstance(value, dict):
        keys = sorted(value)
        return "\n".join([str(k) + ": " + _short(value[k]) for k in keys])
    if isinstance(value, list):
        return "\n".join([_short(v) for v in value])
    return repr(value)


def _short(v):
    if isinstance(v, str):
        return v
    return repr(v)


def _crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


class Console:
    def __init__(self, write, namespace=None, on_session=None):
        self.write = write
        self.on_session = on_session
        self.g = namespace if namespace is not None else {}
        self.g.setdefault("__name__", "__main__")
        self.mode = FRIENDLY
        self.line = bytearray()
        self.cmd = bytearray()
        self._after_cr = False
        self._paste = _PASTE_NONE  # how much of a raw-paste request (\x05 A \x01) came
        self.commands = 0  # commands run (both modes)
        self.errors = 0  # commands that raised

    def banner(self):
        self.write(b"\r\nmeter console: tech.help() lists the technician's calls\r\n" + PROMPT)

    # -- input ------------------------------------------------------------------------
    def feed(self, data):
        """Bytes from the port (any split)."""
        for c in data:
            if self.mode == RAW:
                self._raw(c)
            else:
                self._friendly(c)

    def _friendly(self, c):
        after_cr = self._after_cr
        self._after_cr = c == _CR
        if c == _CR or c == _LF:
            if c == _LF and after_cr:
                return  # the \n of a \r\n
            src = bytes(self.line).decode()
            self.line = bytearray()
            self.write(b"\r\n")
            if src.strip():
                self._run_line(src)
            self.write(PROMPT)
        elif c == _CTRL_A:
            self._enter_raw()
        elif c == _CTRL_C:
            self.line = bytearray()
            self.write(b"\r\n" + PROMPT)
        elif c == _CTRL_D:
            self.line = bytearray()
            self.write(b"\r\nthe meter keeps running (tech.restart() restarts it)\r\n" + PROMPT)
        elif c == _CTRL_B:
            self.line = bytearray()
            self.banner()
        elif c == _BS or c == _DEL:
            if self.line:
                self.line = self.line[:-1]
                self.write(b"\x08 \x08")
        elif c >= _SPACE and len(self.line) < 1024:
            self.line.append(c)
            self.write(bytes((c,)))

    def _enter_raw(self):
        self.mode = RAW
        self.cmd = bytearray()
        self._paste = _PASTE_NONE
        self.write(b"\r\n" + RAW_BANNER)

    def _raw(self, c):
        if self._paste != _PASTE_NONE:  # inside a raw-paste request: \x05 'A' \x01
            if self._paste == _PASTE_E and c == _PASTE_A:
                self._paste = _PASTE_EA
                return
            if self._paste == _PASTE_EA and c == _CTRL_A:
                self._paste = _PASTE_NONE
                self.write(b"R\x00")  # understood, not supported: plain raw mode follows
                return
            self._paste = _PASTE_NONE
        if c == _CTRL_A:  # again: a fresh raw prompt
            self._enter_raw()
        elif c == _CTRL_B:  # back to friendly mode
            self.mode = FRIENDLY
            self.line = bytearray()
            self.banner()
        elif c == _CTRL_C:  # drop what was typed
            self.cmd = bytearray()
        elif c == _CTRL_D:  # run it (or, empty, a soft-reset request)
            cmd = self.cmd
            self.cmd = bytearray()
            if not cmd.strip():
                self.write(b"Ignored: soft reboot\r\n" + RAW_BANNER)
                return
            self.write(b"OK")
            err = ""
            if len(cmd) >= MAX_COMMAND:
                err = "console: command longer than %d bytes\n" % MAX_COMMAND
            else:
                err = self._exec(bytes(cmd).decode())
            self.write(b"\x04")
            self.write(_crlf(err))
            self.write(b"\x04>")
        elif c == _CTRL_E and not self.cmd:
            self._paste = _PASTE_E
        elif len(self.cmd) < MAX_COMMAND:
            self.cmd.append(c)

    # -- running ----------------------------------------------------------------------
    def _count(self):
        if self.commands == 0 and self.on_session is not None:
            try:
                self.on_session()
            except Exception:  # never in the way of the technician
                self.errors += 1
        self.commands += 1

    def _exec(self, src):
        """Run a raw-mode command; its error text ("" when it ran)."""
        self._count()
        try:
            exec(src, self.g)
            return ""
        except Exception as e:
            self.errors += 1
            return format_exception(e)

    def _run_line(self, src):
        self._count()
        try:
            try:
                code = compile(src, "<console>", "eval")
            except SyntaxError:
                code = None
            if code is None:
                exec(src, self.g)
                return
            value = eval(code, self.g)
            if value is not None:
                self.write(_crlf(show(value) + "\n"))
        except Exception as e:
            self.errors += 1
            self.write(_crlf(format_exception(e)))

    async def run(self, reader):
        """Serve the port until it closes (read returns nothing): never raises."""
        kbd = None
        try:
            import micropython

            kbd = micropython.kbd_intr
        except (ImportError, AttributeError):
            pass
        if kbd is not None:
            kbd(-1)
        self.banner()
        try:
            while True:
                data = await reader.read(1)
                if not data:
                    return
                try:
                    self.feed(data)
                except Exception as e:  # the console's own fault: report, carry on
                    self.errors += 1
                    try:
                        self.write(_crlf(format_exception(e)))
                    except Exception:
                        pass
        finally:
            if kbd is not None:
                kbd(3)


def port_writer():
    """write(bytes) to the REPL port: stdout's binary side (not "cooked": the console
    writes its own \\r\\n), or text where there is none."""
    out = getattr(sys.stdout, "buffer", None)
    if out is not None:

        def write(b):
            out.write(b)
            f = getattr(out, "flush", None)
            if f is not None:
                f()

        return write

    def write_text(b):
        sys.stdout.write(b.decode())

    return write_text


def port_reader():
    """An asyncio stream over the REPL port (stdin's binary side)."""
    import asyncio

    return asyncio.StreamReader(getattr(sys.stdin, "buffer", sys.stdin))
