"""The technician's console (firmware/service/console.py) fed byte by byte (portable).

The bytes are the ones mpremote sends (tools: mpremote's transport_serial enter_raw_repl,
exec_raw_no_follow, follow), and the answers are checked against what it waits for; the
end-to-end run with mpremote itself is tests/test_host_console.py.
"""

import asyncio

from firmware.service import console
from firmware.service.console import RAW_BANNER, Console


class Port:
    def __init__(self):
        self.out = bytearray()

    def write(self, b):
        self.out.extend(b)

    def take(self):
        b = bytes(self.out)
        self.out = bytearray()
        return b


def _console(ns=None):
    p = Port()
    g = {} if ns is None else ns
    g["out"] = lambda text: p.write(text.encode())  # output on the same port
    c = Console(p.write, g)
    return p, c


def test_friendly_mode_evaluates_expressions_and_runs_statements():
    p, c = _console()
    c.feed(b"x = 6 * 7\r")
    assert p.take() == b"x = 6 * 7\r\n>>> "  # echo, no value, prompt
    c.feed(b"x\r\n")  # a \r\n pair is one line end
    assert p.take() == b"x\r\n42\r\n>>> "
    c.feed(b"{'b': 2, 'a': [1]}\r")
    assert p.take().endswith(b"\r\na: [1]\r\nb: 2\r\n>>> ")
    c.feed(b"['one', 2]\r")
    assert p.take().endswith(b"\r\none\r\n2\r\n>>> ")
    assert c.commands == 4 and c.errors == 0


def test_the_first_command_of_a_start_reports_a_session_once_in_either_mode():
    calls = []
    p = Port()
    c = Console(p.write, {}, lambda: calls.append(c.commands))
    c.feed(b"\r")  # an empty line runs nothing
    assert calls == []
    c.feed(b"1\r2\r")
    c.feed(b"\x01x = 1\x04")  # raw mode
    assert calls == [0] and c.commands == 3
    raw = Console(p.write, {}, lambda: calls.append("raw"))
    raw.feed(b"\x01x = 1\x04")
    assert calls == [0, "raw"]


def test_a_failing_session_report_is_counted_and_the_command_still_runs():
    def broken():
        raise OSError("log full")

    p = Port()
    c = Console(p.write, {}, broken)
    c.feed(b"6 * 7\r")
    assert p.take().endswith(b"42\r\n>>> ") and c.errors == 1 and c.commands == 1


def test_friendly_mode_reports_an_error_and_keeps_going():
    p, c = _console()
    c.feed(b"1/0\r")
    out = p.take()
    assert b"ZeroDivisionError" in out and out.endswith(b">>> ")
    c.feed(b"undefined_name\r")
    assert b"NameError" in p.take()
    c.feed(b"1+1\r")
    assert p.take().endswith(b"2\r\n>>> ")
    assert c.errors == 2


def test_backspace_ctrl_c_and_ctrl_d_edit_the_line_not_the_meter():
    p, c = _console()
    c.feed(b"12\x7f3\r")
    assert p.take() == b"12\x08 \x083\r\n13\r\n>>> "
    c.feed(b"raise SystemExit\x03")
    assert p.take().endswith(b"\r\n>>> ")
    c.feed(b"\r")  # the discarded line is gone
    assert p.take() == b"\r\n>>> "
    c.feed(b"\x04")
    assert b"keeps running" in p.take()
    assert c.commands == 1


def test_raw_mode_answers_as_mpremote_expects():
    p, c = _console()
    # enter_raw_repl(soft_reset=False): \r\x03 then \r\x01, wait for the banner
    c.feed(b"\r\x03")
    c.feed(b"\r\x01")
    assert p.take().endswith(RAW_BANNER)
    # exec_raw_no_follow: raw-paste offered, refused with R\x00, then plain raw
    c.feed(b"\x05A\x01")
    assert p.take() == b"R\x00"
    c.feed(b"y = 5\nout('y=%d' % y)")
    assert p.take() == b""  # nothing runs before Ctrl-D
    c.feed(b"\x04")
    # follow(): output up to \x04, error text up to \x04, then the next prompt
    assert p.take() == b"OKy=5\x04\x04>"
    c.feed(b"1/0\x04")
    out = p.take()
    assert out.startswith(b"OK\x04") and out.endswith(b"\x04>")
    assert b"ZeroDivisionError" in out.split(b"\x04")[1]
    assert c.g["y"] == 5  # globals persist between commands, as on a board


def test_a_soft_reset_request_is_ignored_and_answered_as_mpremote_waits_for():
    p, c = _console()
    c.feed(b"\r\x01")
    p.take()
    c.feed(b"\x04")  # enter_raw_repl(soft_reset=True): Ctrl-D on an empty command
    out = p.take()
    assert out.endswith(b"soft reboot\r\n" + RAW_BANNER)
    assert b"Ignored" in out


def test_ctrl_c_in_raw_mode_drops_the_command_and_ctrl_b_returns():
    p, c = _console()
    c.feed(b"\x01partial\x03out('z')\x04")
    assert p.take().endswith(b"OKz\x04\x04>")
    c.feed(b"\x02")
    assert p.take().endswith(b">>> ")
    assert c.mode == console.FRIENDLY
    c.feed(b"2*3\r")
    assert p.take().endswith(b"6\r\n>>> ")


def test_an_overlong_raw_command_is_refused_not_run():
    p, c = _console()
    c.feed(b"\x01")
    p.take()
    c.feed(b"x=1;" * (console.MAX_COMMAND // 4 + 1))
    c.feed(b"\x04")
    out = p.take()
    assert out.startswith(b"OK\x04") and b"longer than" in out
    assert "x" not in c.g


class Reader:
    """An async stream over prepared chunks, then end of file."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    async def read(self, n):
        await asyncio.sleep(0)
        if not self.chunks:
            return b""
        return self.chunks.pop(0)


def test_run_serves_until_the_port_closes_beside_another_task():
    p, c = _console()
    ticks = [0]

    async def other():
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    async def main():
        t = asyncio.create_task(other())
        await c.run(Reader([b"4", b"0+", b"2\r", b"\x01", b"out('hi')", b"\x04"]))
        t.cancel()

    asyncio.run(main())
    out = p.take()
    assert b"tech.help()" in out  # the banner
    assert b"42\r\n>>> " in out and out.endswith(b"OKhi\x04\x04>")
    assert ticks[0] >= 6  # the other task ran between the bytes


def test_show_formats_dicts_and_lists_a_line_each():
    assert console.show({"b": "x", "a": 1}) == "a: 1\nb: x"
    assert console.show(["a", 2]) == "a\n2"
    assert console.show(3) == "3"
