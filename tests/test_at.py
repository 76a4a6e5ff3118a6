"""drivers/at.py against a scripted fake modem on the simulated UART.

Portable (CPython pytest and `micropython`). Clock: tools/sim's VirtualClock for every
test, so timeouts of seconds run instantly and times can be asserted exactly; the fake
modem answers from a script (command -> reply bytes, optionally late) and SimUART
optionally paces its bytes at a baud rate so replies arrive in fragments.
"""

import asyncio

import support

from drivers.at import ATBusy, ATCommandError, ATEngine, ATReset, ATTimeout, ints
from tools.sim.uart import SimUART
from tools.sim.vclock import VirtualClock


class Fake:
    """Scripted modem: script[cmd] is bytes, a list of (delay_ms, bytes), or fn(fake, cmd)."""

    def __init__(self, uart, clock, echo=False):
        self.uart = uart
        self.clock = clock
        self.echo = echo
        self.script = {}
        self.cmds = []
        self.data = bytearray()  # payload bytes written after a prompt
        self._buf = bytearray()
        self._data_left = 0
        self._out = []  # [due_ms, bytes]
        uart.attach(self)

    def later(self, ms, data):
        self._out.append([self.clock.ticks_ms() + ms, data])
        self._out.sort(key=lambda x: x[0])

    def expect_data(self, n):
        self._data_left = n

    def on_rx(self, b):
        for x in b:
            if self._data_left:
                self.data.append(x)
                self._data_left -= 1
                if not self._data_left:
                    r = self.script.get("<data>")
                    if r is not None:
                        self._reply(r, "<data>")
                continue
            if x == 13:
                cmd = bytes(self._buf).decode()
                self._buf = bytearray()
                self.cmds.append(cmd)
                if self.echo:
                    self.later(0, cmd.encode() + b"\r")
                if cmd == "ATE0":
                    self.echo = False
                r = self.script.get(cmd)
                if r is not None:
                    self._reply(r, cmd)
            elif x != 10:
                self._buf.append(x)

    def _reply(self, r, cmd):
        if isinstance(r, bytes):
            self.later(0, r)
        elif isinstance(r, list):
            for ms, d in r:
                self.later(ms, d)
        else:
            r(self, cmd)

    def poll(self):
        now = self.clock.ticks_ms()
        while self._out and self._out[0][0] <= now:
            self.uart.feed(self._out.pop(0)[1])


def _rig(line_baud=0, echo=False, **kw):
    clock = VirtualClock()
    uart = SimUART(clock, baud=line_baud)
    fake = Fake(uart, clock, echo)
    at = ATEngine(uart, clock, **kw)
    return clock, uart, fake, at


_drive = support.drive
_fails = support.fails


# -- finals ------------------------------------------------------------------------


def test_ok_with_information_lines():
    clock, uart, fake, at = _rig()
    fake.script["AT+CSQ"] = b"\r\n+CSQ: 17,99\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+CSQ"))
    assert r.lines == ["+CSQ: 17,99"]
    assert r.final == "OK"
    assert r.first("+CSQ:") == "17,99"
    assert ints(r.first("+CSQ:")) == [17, 99]
    assert fake.cmds == ["AT+CSQ"]


def test_plain_error():
    clock, uart, fake, at = _rig()
    fake.script["AT+FOO"] = b"\r\nERROR\r\n"
    e = _fails(ATCommandError, clock, at.command("AT+FOO"))
    assert e.kind == "ERROR" and e.code is None and e.cmd == "AT+FOO"


def test_cme_and_cms_errors_carry_their_code():
    clock, uart, fake, at = _rig()
    fake.script["AT+CPIN?"] = b"\r\n+CME ERROR: 10\r\n"
    fake.script["AT+CMGS=1"] = b"\r\n+CMS ERROR: 500\r\n"
    fake.script["AT+CPIN=1"] = b"\r\n+CME ERROR: SIM not inserted\r\n"
    e = _fails(ATCommandError, clock, at.command("AT+CPIN?"))
    assert (e.kind, e.code) == ("CME", 10)
    e = _fails(ATCommandError, clock, at.command("AT+CMGS=1"))
    assert (e.kind, e.code) == ("CMS", 500)
    e = _fails(ATCommandError, clock, at.command("AT+CPIN=1"))
    assert e.kind == "CME" and e.code is None and "SIM not inserted" in e.text


def test_send_fail_is_an_error_final_and_send_ok_a_success():
    clock, uart, fake, at = _rig()

    def qisend(f, cmd):
        f.later(0, b"\r\n> ")
        f.expect_data(4)

    fake.script["AT+QISEND=0,4"] = qisend
    fake.script["<data>"] = b"\r\nSEND OK\r\n"
    r = _drive(clock, at.command("AT+QISEND=0,4", data=b"abcd"))
    assert r.final == "SEND OK" and bytes(fake.data) == b"abcd"
    fake.script["<data>"] = b"\r\nSEND FAIL\r\n"
    e = _fails(ATCommandError, clock, at.command("AT+QISEND=0,4", data=b"wxyz"))
    assert e.kind == "SEND FAIL"


# -- timeouts ----------------------------------------------------------------------


def test_timeout_has_a_deadline_and_a_late_reply_is_not_taken_for_the_next():
    clock, uart, fake, at = _rig()
    fake.script["AT+SLOW"] = [(1500, b"\r\nOK\r\n")]  # after the 1000 ms deadline
    fake.script["AT+CSQ"] = b"\r\n+CSQ: 5,99\r\n\r\nOK\r\n"
    e = _fails(ATTimeout, clock, at.command("AT+SLOW", timeout_ms=1000))
    assert "no final" in str(e)
    assert 1000 <= clock.now < 1100
    assert at.timeouts == 1

    async def next_cmd():
        await clock.sleep_ms(400)  # the next command starts just before the late OK
        return await at.command("AT+CSQ")

    r = _drive(clock, next_cmd())
    assert r.lines == ["+CSQ: 5,99"]
    assert at.strays == 1  # the late OK was dropped, not given to AT+CSQ


def test_no_reply_at_all_times_out():
    clock, uart, fake, at = _rig()
    t0 = clock.now
    _fails(ATTimeout, clock, at.command("AT+NOTHING", timeout_ms=3000))
    assert 3000 <= clock.now - t0 < 3100


def test_second_command_waits_its_turn_or_reports_busy():
    clock, uart, fake, at = _rig()
    fake.script["AT+A"] = [(300, b"\r\nOK\r\n")]
    fake.script["AT+B"] = b"\r\n+B: 2\r\n\r\nOK\r\n"

    async def both():
        t = asyncio.create_task(at.command("AT+A"))
        await clock.sleep_ms(1)
        r = await at.command("AT+B")
        ra = await t
        return ra, r

    ra, rb = _drive(clock, both())
    assert ra.final == "OK" and rb.lines == ["+B: 2"]
    assert fake.cmds == ["AT+A", "AT+B"]  # one at a time, in order

    fake.script["AT+A"] = [(3000, b"\r\nOK\r\n")]

    async def busy():
        t = asyncio.create_task(at.command("AT+A", timeout_ms=5000))
        await clock.sleep_ms(1)
        try:
            await at.command("AT+B", timeout_ms=500)
        except ATBusy:
            await t
            return "busy"

    assert _drive(clock, busy()) == "busy"


# -- prompt and data ---------------------------------------------------------------


def _cipsend(f, cmd):
    n = int(cmd.split(",")[1])
    f.later(5, b"\r\n> ")
    f.expect_data(n)


def test_prompt_without_line_end_then_data_then_done_line():
    clock, uart, fake, at = _rig()
    fake.script["AT+CIPSEND=0,7"] = _cipsend
    fake.script["<data>"] = [(0, b"\r\nOK\r\n"), (40, b"\r\n+CIPSEND: 0,7,7\r\n")]
    payload = b"\x10\r\nOK\r\n"  # binary that looks like a final: it is only data
    r = _drive(clock, at.command("AT+CIPSEND=0,7", data=payload, done="+CIPSEND:"))
    assert bytes(fake.data) == payload
    assert r.final == "+CIPSEND: 0,7,7"
    assert r.first("+CIPSEND:") == "0,7,7"


def test_long_data_is_written_in_paced_chunks():
    clock, uart, fake, at = _rig(write_chunk=64, baud=115200)
    fake.script["AT+CIPSEND=0,1000"] = _cipsend
    fake.script["<data>"] = [(0, b"\r\nOK\r\n"), (0, b"\r\n+CIPSEND: 0,1000,1000\r\n")]
    payload = bytes(range(250)) * 4
    t0 = clock.now
    writes = []
    write = uart.write

    def spy(b):
        writes.append((clock.now, len(b)))
        return write(b)

    uart.write = spy

    async def send():
        await at.command("AT+CIPSEND=0,1000", data=payload, done="+CIPSEND:")
        return clock.now

    t1 = _drive(clock, send())
    assert bytes(fake.data) == payload
    # 16 chunks of <= 64 bytes, 5 ms apart at 115200 baud: the UART never has to hold
    # more than a chunk, so uart.write cannot stall the loop
    sizes = [n for t, n in writes[1:]]
    assert max(sizes) == 64 and sum(sizes) == 1000 and len(sizes) == 16
    assert t1 - t0 >= 75


def test_missing_prompt_times_out():
    clock, uart, fake, at = _rig()
    fake.script["AT+CIPSEND=0,5"] = b""  # swallowed
    e = _fails(ATTimeout, clock, at.command("AT+CIPSEND=0,5", data=b"hello", prompt_ms=2000))
    assert "prompt" in str(e)
    assert 2000 <= clock.now < 2100
    assert bytes(fake.data) == b""


def test_error_instead_of_prompt():
    clock, uart, fake, at = _rig()
    fake.script["AT+CIPSEND=3,5"] = b"\r\nERROR\r\n"
    _fails(ATCommandError, clock, at.command("AT+CIPSEND=3,5", data=b"hello"))
    assert bytes(fake.data) == b""


# -- binary reads ------------------------------------------------------------------


def _rxget_len(line):
    return ints(line.split(":", 1)[1])[2]


def test_ciprxget_raw_bytes_are_not_split_into_lines():
    raw = b"\r\nOK\r\n> \x00\xff+CIPRXGET: 1,0\r\nERROR\r"
    reply = b"\r\n+CIPRXGET: 2,0,%d,3\r\n" % len(raw) + raw + b"\r\nOK\r\n"
    for baud in (0, 9600):  # whole, and trickling in fragments
        clock, uart, fake, at = _rig(line_baud=baud)
        fake.script["AT+CIPRXGET=2,0,1460"] = reply
        r = _drive(
            clock,
            at.command("AT+CIPRXGET=2,0,1460", resp="+CIPRXGET: 2,", raw=_rxget_len),
        )
        assert bytes(r.data) == raw
        assert r.lines == ["+CIPRXGET: 2,0,%d,3" % len(raw)]
        assert r.final == "OK"
        assert at.resets == 0


def test_qird_raw_read_and_empty_read():
    clock, uart, fake, at = _rig()
    fake.script["AT+QIRD=0,1500"] = b"\r\n+QIRD: 4\r\n\x20\x02\x00\x00\r\nOK\r\n"
    r = _drive(clock, at.command("AT+QIRD=0,1500", raw=lambda l: int(l[6:])))
    assert bytes(r.data) == b"\x20\x02\x00\x00"
    fake.script["AT+QIRD=0,1500"] = b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+QIRD=0,1500", raw=lambda l: int(l[6:])))
    assert bytes(r.data) == b"" and r.final == "OK"


# -- URCs --------------------------------------------------------------------------


def test_urcs_in_the_middle_of_a_reply_go_to_their_handlers():
    clock, uart, fake, at = _rig()
    seen = []
    at.urc("+CIPRXGET: 1,", seen.append)
    at.urc("+CEREG:", seen.append)
    fake.script["AT+CSQ"] = b"\r\n+CSQ: 20,99\r\n\r\n+CIPRXGET: 1,0\r\n\r\n+CEREG: 5\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+CSQ"))
    assert r.lines == ["+CSQ: 20,99"]
    assert seen == ["+CIPRXGET: 1,0", "+CEREG: 5"]


def test_urc_with_the_same_prefix_as_the_command_is_told_apart_by_resp():
    clock, uart, fake, at = _rig()
    seen = []
    at.urc("+CIPRXGET: 1,", seen.append)
    fake.script["AT+CIPRXGET=2,0,10"] = (
        b"\r\n+CIPRXGET: 1,0\r\n\r\n+CIPRXGET: 2,0,2,0\r\nhi\r\nOK\r\n"
    )
    r = _drive(clock, at.command("AT+CIPRXGET=2,0,10", resp="+CIPRXGET: 2,", raw=_rxget_len))
    assert bytes(r.data) == b"hi" and seen == ["+CIPRXGET: 1,0"]


def test_urc_followed_by_raw_data_mid_reply():
    clock, uart, fake, at = _rig()
    got = []

    def push(line):  # Quectel push mode: +QIURC: "recv",<id>,<len> CRLF <data>
        at.read_raw(int(line.split(",")[2]), got.append)

    at.urc('+QIURC: "recv",', push)
    fake.script["AT+CSQ"] = b'\r\n+CSQ: 9,99\r\n\r\n+QIURC: "recv",0,6\r\n\r\nOK\r\n\r\nOK\r\n'
    r = _drive(clock, at.command("AT+CSQ"))
    assert got == [b"\r\nOK\r\n"]  # the data looked like a final; it was not one
    assert r.lines == ["+CSQ: 9,99"] and r.final == "OK"


def test_a_urc_inside_a_binary_reply_is_handled_and_lookalikes_in_the_data_are_data():
    raw = b'\r\n+QIURC: "recv",0\r\n\r\n+CIPRXGET: 1,0\r\n\r\nOK\r\nRDY\r\n'
    reply = (
        b"\r\n+CIPRXGET: 1,0\r\n"  # before the header: URC
        + b"\r\n+CIPRXGET: 2,0,%d,0\r\n" % len(raw)
        + raw  # data that reads as URCs, a final and a boot banner
        + b"\r\n+CIPRXGET: 1,0\r\n"  # more data came meanwhile: between data and OK
        + b"\r\nOK\r\n"
    )
    for baud in (0, 9600):  # whole, and trickling in fragments across polls
        clock, uart, fake, at = _rig(line_baud=baud)
        seen = []
        at.urc("+CIPRXGET: 1,", seen.append)
        at.urc('+QIURC: "recv",', seen.append)
        fake.script["AT+CIPRXGET=2,0,1460"] = reply
        r = _drive(clock, at.command("AT+CIPRXGET=2,0,1460", resp="+CIPRXGET: 2,", raw=_rxget_len))
        assert bytes(r.data) == raw and r.final == "OK"
        assert seen == ["+CIPRXGET: 1,0", "+CIPRXGET: 1,0"]  # both notices, no lookalike
        assert at.resets == 0 and at.strays == 0


def test_urcs_between_commands_are_delivered_by_poll():
    clock, uart, fake, at = _rig()
    seen = []
    at.urc("+IPCLOSE:", seen.append)
    fake.later(0, b"\r\n+IPCLOSE: 0,1\r\n")
    at.poll()
    assert seen == ["+IPCLOSE: 0,1"] and at.urc_count == 1


# -- echo, init, noise -------------------------------------------------------------


def test_init_turns_echo_off_and_tolerates_the_echo():
    clock, uart, fake, at = _rig(echo=True)
    for c in ("AT", "ATE0", "AT+CMEE=1"):
        fake.script[c] = b"\r\nOK\r\n"
    fake.script["AT+CSQ"] = b"\r\n+CSQ: 1,99\r\n\r\nOK\r\n"
    _drive(clock, at.init())
    assert fake.cmds == ["AT", "ATE0", "AT+CMEE=1"]
    fake.echo = True  # echo back on (a reset we missed): replies are still right
    r = _drive(clock, at.command("AT+CSQ"))
    assert r.lines == ["+CSQ: 1,99"]


def test_sync_repeats_at_until_the_modem_answers():
    clock, uart, fake, at = _rig()
    answers = []

    def at_(f, cmd):
        if clock.now >= 2500:  # booting until then: AT dropped
            answers.append(clock.now)
            f.later(0, b"\r\nOK\r\n")

    fake.script["AT"] = at_
    _drive(clock, at.sync(timeout_ms=10000, attempt_ms=500))
    assert len(answers) == 1 and len(fake.cmds) >= 4  # 500, 1000, 2000 ms, answered
    fake.script["AT"] = b""
    _fails(ATTimeout, clock, at.sync(timeout_ms=2000))


def test_noise_lines_are_ignored_safely():
    clock, uart, fake, at = _rig()
    fake.later(0, b"\r\n\xff\xfe\x00\x81junk\r\n#$%noise\r\n\r\n\r\n")
    at.poll()
    assert at.noise == 2
    fake.script["AT+CSQ"] = b"\r\n\xc3\x28bad\r\n+CSQ: 3,99\r\nline noise\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+CSQ"))
    assert r.first("+CSQ:") == "3,99" and r.final == "OK"


def test_overlong_line_is_dropped_and_the_heap_stays_bounded():
    clock, uart, fake, at = _rig(max_line=128)
    for _ in range(200):
        fake.later(0, b"A" * 500)  # 100 kB with no line end
        at.poll()
        assert len(at._line) <= 128
    fake.later(0, b"\r\n")  # the end of the monster line
    fake.script["AT+CSQ"] = b"\r\n+CSQ: 4,99\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+CSQ"))
    assert r.lines == ["+CSQ: 4,99"]
    assert at.overflows == 1


# -- reboot ------------------------------------------------------------------------


def test_boot_banner_fails_the_command_and_tells_the_owner_once():
    clock, uart, fake, at = _rig(boot_window_ms=30000)
    resets = []
    at.on_reset = resets.append
    fake.script["AT+CIPSEND=0,5"] = [(100, b"\r\nRDY\r\n")]
    e = _fails(ATReset, clock, at.command("AT+CIPSEND=0,5", data=b"hello"))
    assert "RDY" in str(e)
    assert resets == ["RDY"]
    for line in (b"+CPIN: READY", b"SMS DONE", b"PB DONE"):  # the rest of that boot
        fake.later(0, b"\r\n" + line + b"\r\n")
        at.poll()
    assert resets == ["RDY"] and at.resets == 1

    async def later():
        await clock.sleep_ms(31000)
        fake.later(0, b"\r\n*ATREADY: 1\r\n\r\n+CPIN: READY\r\n\r\nPB DONE\r\n")
        await clock.sleep_ms(10)
        at.poll()

    _drive(clock, later())
    assert resets == ["RDY", "*ATREADY: 1"]


def test_weak_banner_alone_after_the_window_is_a_reboot():
    clock, uart, fake, at = _rig(boot_window_ms=1000)
    resets = []
    at.on_reset = resets.append
    fake.later(0, b"\r\nPB DONE\r\n")
    at.poll()
    assert resets == ["PB DONE"]


def test_cpin_ready_as_the_answer_to_cpin_query_is_not_a_reboot():
    clock, uart, fake, at = _rig()
    resets = []
    at.on_reset = resets.append
    fake.script["AT+CPIN?"] = b"\r\n+CPIN: READY\r\n\r\nOK\r\n"
    r = _drive(clock, at.command("AT+CPIN?"))
    assert r.first("+CPIN:") == "READY" and resets == []
    at.hold_banners()  # after a PIN entry the modem announces READY: expected
    fake.later(0, b"\r\n+CPIN: READY\r\n")
    at.poll()
    assert resets == []


def test_reboot_mid_binary_read_resyncs():
    clock, uart, fake, at = _rig()
    fake.script["AT+CIPRXGET=2,0,100"] = b"\r\n+CIPRXGET: 2,0,100,0\r\nonly part"
    e = _fails(
        ATTimeout,
        clock,
        at.command("AT+CIPRXGET=2,0,100", timeout_ms=500, resp="+CIPRXGET: 2,", raw=_rxget_len),
    )
    assert e is not None
    resets = []
    at.on_reset = resets.append
    fake.later(0, b"\r\nRDY\r\n")  # not swallowed as the missing 91 bytes
    at.poll()
    assert resets == ["RDY"]
    fake.script["AT"] = b"\r\nOK\r\n"
    r = _drive(clock, at.command("AT"))
    assert r.final == "OK"


def test_prefix_derivation():
    from drivers.at import _prefix

    assert _prefix("AT+CSQ") == "+CSQ:"
    assert _prefix("AT+CREG?") == "+CREG:"
    assert _prefix('AT+CPIN="1234"') == "+CPIN:"
    assert _prefix("ATE0") is None
    assert ints('1,"10.0.0.1",-1,x') == [1, None, -1, None]
    support.raises(ValueError, int, "x")


def test_lines_after_the_final_in_the_same_read_are_not_the_finished_commands():
    clock, uart, fake, at = _rig()
    seen = []
    at.urc("+CIPRXGET:", seen.append)
    # the reply, then at once (one UART read) a URC with the command's own prefix and a
    # second final: neither belongs to the command that has just finished
    fake.script["AT+CIPRXGET=4,0"] = (
        b"\r\n+CIPRXGET: 4,0,0\r\n\r\nOK\r\n+CIPRXGET: 1,0\r\nERROR\r\n"
    )
    r = _drive(clock, at.command("AT+CIPRXGET=4,0"))
    assert r.final == "OK" and r.lines == ["+CIPRXGET: 4,0,0"]
    assert seen == ["+CIPRXGET: 1,0"]  # the data-waiting notice reaches its handler
    assert at.strays == 1  # the second final is counted, not taken
