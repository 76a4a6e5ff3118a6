"""The vending CLI: keygen, meter-key, token, manage, decode; send and cmd over MQTT.

Keys are never printed: key stores and meter key files are written with mode 0600 and
named by a fingerprint (8 hex digits of an HMAC of the key) in the messages.
"""

import json
import sys
import time

import click

from tools.vend import core

FORMATS = click.Choice(["compact", "envelope"])


def _fail(e):
    raise click.ClickException(str(e))


def _load(path):
    warn = core.keystore_mode_warning(path)
    if warn:
        click.echo(warn, err=True)
    try:
        return core.load_keystore(path)
    except core.VendError as e:
        _fail(e)


def _meter_key(path, meter_id, revision):
    vk = _load(path)
    try:
        return core.meter_key(vk, meter_id, revision), vk
    except core.VendError as e:
        _fail(e)


def _issue_times(issued, expiry, valid_for):
    issued = core.stamp_now() if issued is None else issued
    if expiry is None:
        expiry = issued + valid_for if valid_for else 0
    if not 0 <= issued <= 0xFFFFFFFF or not 0 <= expiry <= 0xFFFFFFFF:
        _fail("issue time and expiry: 0..4294967295 seconds since 2000-01-01")
    if expiry and expiry < issued:
        _fail("expiry before the issue time")
    return issued, expiry


def _meter_id_option(f):
    return click.option("--meter-id", required=True, help="The meter's id (1 to 19 digits).")(f)


def _key_option(f):
    return click.option(
        "--key",
        "key_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Key store file made by `keygen`.",
    )(f)


def decimals_option(help, required=False):
    return click.option(
        "--decimals", type=click.IntRange(0, core.DECIMALS_MAX), required=required, help=help
    )


_decimals_option = decimals_option(
    "The meter's currency decimals; by default the key store's record of them."
)


def _decimals(key_path, meter_id, given):
    try:
        return core.meter_decimals(key_path, meter_id, given)
    except core.VendError as e:
        _fail(e)


def _envelope_options(f):
    f = click.option(
        "--valid-for", type=int, default=0, help="Envelope: expire this many seconds after issue."
    )(f)
    f = click.option(
        "--expiry", type=int, default=None, help="Envelope: expiry stamp (0 = none)."
    )(f)
    f = click.option(
        "--issued",
        type=int,
        default=None,
        help="Envelope: issue time in seconds since 2000-01-01 (default: now, local time).",
    )(f)
    return f


@click.group()
def main():
    """Prepaid meter vending: keys, compact (20-digit) tokens and remote envelopes."""


@main.command()
@click.option("--out", "path", required=True, help="Key store file to create (mode 0600).")
@click.option("--bytes", "nbytes", type=click.Choice(["16", "32"]), default="32")
@decimals_option(
    "Currency decimals of the meters this store serves (a meter of another currency gets "
    "its own with meter-key --decimals).",
    required=True,
)
@click.option("--force", is_flag=True, help="Replace an existing key store.")
def keygen(path, nbytes, decimals, force):
    """Create a key store holding a fresh random vending key."""
    try:
        fp = core.keygen(path, int(nbytes), force, decimals)
    except core.VendError as e:
        _fail(e)
    click.echo("wrote key store %s (vending key fingerprint %s)" % (path, fp))


@main.command("meter-key")
@_key_option
@_meter_id_option
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@click.option(
    "--ken",
    type=click.IntRange(0, 255),
    default=255,
    show_default=True,
    help="Key expiry number: valid while (stamp >> 24) <= KEN; 255 never expires.",
)
@click.option("--out", "out", required=True, help="Meter key file to write (mode 0600).")
@decimals_option(
    "Record this meter's currency decimals in the key store (when they differ from the store's)."
)
@click.option("--force", is_flag=True)
def meter_key(key_path, meter_id, revision, ken, out, decimals, force):
    """Write the key file a meter is commissioned with (44 bytes, never printed)."""
    key, _ = _meter_key(key_path, meter_id, revision)
    try:
        core.write_meter_key(out, key, revision, ken, force)
        if decimals is not None:
            core.record_meter_decimals(key_path, meter_id, decimals)
    except core.VendError as e:
        _fail(e)
    click.echo(
        "wrote meter key %s (meter %s, revision %d, KEN %d, fingerprint %s)"
        % (out, core.parse_meter_id(meter_id), revision, ken, core.fingerprint(key))
    )


@main.command()
@_key_option
@_meter_id_option
@click.option("--amount", required=True, help='Credit as a decimal, e.g. "10.00".')
@click.option("--token-id", type=int, required=True, help="Unique per meter, from 1, in order.")
@click.option("--format", "fmt", type=FORMATS, default="compact", show_default=True)
@_decimals_option
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@_envelope_options
def token(
    key_path, meter_id, amount, token_id, fmt, decimals, revision, issued, expiry, valid_for
):
    """Print one credit token: 20 digits, or the envelope in hex."""
    key, _ = _meter_key(key_path, meter_id, revision)
    decimals = _decimals(key_path, meter_id, decimals)
    try:
        units = core.parse_money(amount, decimals)
        if units < 1:
            raise core.VendError("amount must be positive")
        if fmt == "compact":
            if core.amount_field(units) is None:
                near = [
                    core.format_money(a, decimals)
                    for a in core.representable_near(units)
                    if a is not None
                ]
                raise core.VendError(
                    "%s can't be carried exactly by a compact token (nearest: %s); vend one of "
                    "those or use --format envelope" % (amount, " or ".join(near))
                )
            click.echo(core.compact_credit(key, token_id, units))
        else:
            issued, expiry = _issue_times(issued, expiry, valid_for)
            data = core.envelope(
                key, revision, meter_id, token_id, issued, expiry, "credit", units
            )
            click.echo(data.hex())
    except core.VendError as e:
        _fail(e)


ACTIONS = ["max-power", "low-credit", "clear-tamper", "payment-mode", "key-change"]


@main.command()
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("value", required=False)
@_key_option
@_meter_id_option
@click.option(
    "--token-id", type=int, default=None, help="Required except for a compact key change."
)
@click.option("--format", "fmt", type=FORMATS, default="compact", show_default=True)
@_decimals_option
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@click.option("--ken", type=click.IntRange(0, 255), default=255, help="key-change: new KEN.")
@_envelope_options
def manage(
    action,
    value,
    key_path,
    meter_id,
    token_id,
    fmt,
    decimals,
    revision,
    ken,
    issued,
    expiry,
    valid_for,
):
    """Print a management token.

    \b
    max-power W          maximum power in watts (0 = no limit)
    low-credit AMOUNT    low-credit threshold, a decimal amount
    clear-tamper         clear the tamper condition
    payment-mode MODE    prepaid, or postpaid (disables prepayment)
    key-change           move the meter to key revision --revision + 1 (compact: 2 lines)
    """
    key, vk = _meter_key(key_path, meter_id, revision)
    kind = action.replace("-", "_")
    if kind == "low_credit":
        decimals = _decimals(key_path, meter_id, decimals)
    try:
        if kind == "key_change":
            if revision >= 255:
                raise core.VendError("key revision 255 is the last")
            material = core.key_material(vk, meter_id, revision + 1)
            if fmt == "compact":
                for half in core.compact_key_change(key, material, ken):
                    click.echo(half)
                return
            v = 0
        elif kind == "clear_tamper":
            v = 0
        elif value is None:
            raise core.VendError("%s needs a value" % action)
        elif kind == "max_power":
            if not value.isdigit():
                raise core.VendError("max-power: watts, an integer")
            v = int(value)
        elif kind == "low_credit":
            v = core.parse_money(value, decimals)
        else:
            modes = {"postpaid": 1, "credit": 1, "prepaid": 2, "prepayment": 2}
            if value not in modes:
                raise core.VendError("payment-mode: prepaid or postpaid")
            v = modes[value]
        if token_id is None:
            raise core.VendError("--token-id is required")
        if fmt == "compact":
            click.echo(core.compact_management(key, kind, token_id, v))
            return
        issued, expiry = _issue_times(issued, expiry, valid_for)
        if kind == "key_change":
            data = core.envelope(
                key, revision, meter_id, token_id, issued, expiry, "key_change_1", 0, ken, material
            )
        else:
            data = core.envelope(key, revision, meter_id, token_id, issued, expiry, kind, v)
        click.echo(data.hex())
    except core.VendError as e:
        _fail(e)


@main.command()
@_key_option
@_meter_id_option
@click.argument("token_text", metavar="TOKEN")
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@_decimals_option
def decode(key_path, meter_id, token_text, revision, decimals):
    """Explain a token (20 digits or envelope hex) under a meter's key; exit 1 if invalid."""
    key, _ = _meter_key(key_path, meter_id, revision)
    decimals = _decimals(key_path, meter_id, decimals)
    try:
        data = core.parse_envelope_text(token_text)
        if data is not None:
            info = core.decode_envelope(key, revision, meter_id, data)
        else:
            info = core.decode_compact(key, token_text)
    except core.VendError as e:
        _fail(e)
    click.echo(
        "key: meter %s revision %d (fingerprint %s)" % (meter_id, revision, core.fingerprint(key))
    )
    for name in (
        "format",
        "version",
        "key_revision",
        "meter_id",
        "class",
        "class_name",
        "subclass",
        "kind",
        "token_id",
        "random",
        "ken",
        "crc_ok",
        "mac_ok",
    ):
        if name in info:
            click.echo("%s: %s" % (name.replace("_", " "), info[name]))
    for name in ("issued", "expiry"):
        if info.get(name):
            click.echo("%s: %d (%s)" % (name, info[name], core.date_of(info[name])))
    if "amount" in info:
        click.echo(
            "amount: %s (%d minor units)"
            % (core.format_money(info["amount"], decimals), info["amount"])
        )
    elif "value" in info or "field" in info:
        click.echo("value: %d" % info.get("value", info.get("field")))
    if info.get("valid"):
        click.echo("valid: yes")
    else:
        click.echo("valid: no (%s)" % info.get("error", "?"))
        sys.exit(1)


# --- over MQTT: send a top-up, send a command, wait for the meter's signed answer

EXIT_REFUSED = 2  # the meter answered and refused
EXIT_NO_ANSWER = 3  # sent (or maybe sent), no verified answer in time: repeat it, same id
EXIT_BROKER = 4  # the broker could not be reached: nothing was sent
EXIT_BRIDGE = 5  # the LoRaWAN bridge said it did not forward the top-up to the meter


class _BridgeNote(Exception):
    """The LoRaWAN bridge's (unsigned) note that it did not forward a top-up."""


def _mqtt_options(f):
    f = click.option("--json", "as_json", is_flag=True, help="Print the verified ack as JSON.")(f)
    f = click.option("--topic-prefix", default="meters", show_default=True, help="Topic prefix.")(
        f
    )
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=30.0,
        show_default=True,
        help="Seconds to wait for it all: connection, delivery and the meter's answer.",
    )(f)
    f = click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)(f)
    f = click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker.")(f)
    return f


def _log(line):
    click.echo(line, err=True)


def _exchange(
    host, port, timeout, meter, prefix, key, kind, payload, what, wanted, repeat, note=None
):
    """Subscribe to the meter's ack topic, publish payload to its `kind` topic at QoS 1 and
    return the first ack that verifies under key and satisfies wanted; exit 3 or 4 else.
    With note = (field, id) ("token" or "cmd") the LoRaWAN bridge's notes
    (<prefix>/<id>/bridge) are heard too: its refusal of that id ends the wait (exit 5)."""
    from tools.vend import mqtt

    deadline = time.monotonic() + timeout

    def left():
        return max(0.0, deadline - time.monotonic())

    ack_topic = mqtt.topic(meter, "ack", prefix)
    out_topic = mqtt.topic(meter, kind, prefix)
    link = mqtt.Link(host, port, timeout=timeout, log=_log)
    notes = None
    if note is not None:
        notes = (mqtt.topic(meter, "bridge", prefix), _bridge_note(*note))
    phase = "connect"
    try:
        link.connect(left())
        link.subscribe(ack_topic, 1, left())  # before publishing: the answer can be quick
        if notes is not None:
            link.subscribe(notes[0], 1, left())
        phase = "send"  # from here on the message may reach the meter
        link.publish(out_topic, payload, 1, False, left())
        _log("sent %s to %s; waiting for the answer on %s" % (what, out_topic, ack_topic))
        phase = "wait"
        return link.wait_verified(ack_topic, key, wanted, left(), notes=notes)
    except _BridgeNote as e:
        _log(
            "error: the LoRaWAN bridge did not forward %s: %s (an unsigned note from the "
            "bridge; %s)" % (what, e, repeat)
        )
        sys.exit(EXIT_BRIDGE)
    except mqtt.MqttError as e:
        if phase == "connect":
            _log("error: %s; nothing was sent" % e)
            sys.exit(EXIT_BROKER)
        why = str(e)
        if phase == "wait" and isinstance(e, mqtt.Timeout):
            why = "no answer from meter %d within %g s" % (meter, timeout)
        _log("%s: %s may still be delivered later; %s" % (why, what, repeat))
        sys.exit(EXIT_NO_ANSWER)
    finally:
        link.close()


def _bridge_note(field, ident):
    def note(t, payload):
        try:
            obj = json.loads(bytes(payload).decode())
        except ValueError:
            return None
        if isinstance(obj, dict) and obj.get(field) == ident and obj.get("error"):
            raise _BridgeNote(str(obj["error"]))
        return None

    return note


def _report(ack, line, ok, as_json):
    if as_json:
        _log(line)
        click.echo(json.dumps(ack))
    else:
        click.echo(line)
    if not ok:
        sys.exit(EXIT_REFUSED)


@main.command()
@_key_option
@_meter_id_option
@click.option("--amount", required=True, help='Credit as a decimal, e.g. "10.00".')
@click.option("--token-id", type=int, required=True, help="Unique per meter, from 1, in order.")
@click.option(
    "--format",
    "fmt",
    type=FORMATS,
    default="envelope",
    show_default=True,
    help="envelope (70 bytes), or compact: the 20 digits, for a LoRaWAN meter whose "
    "downlinks cannot carry an envelope (the bridge sends them as 9 bytes).",
)
@_decimals_option
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@_envelope_options
@_mqtt_options
def send(
    key_path,
    meter_id,
    amount,
    token_id,
    fmt,
    decimals,
    revision,
    issued,
    expiry,
    valid_for,
    host,
    port,
    timeout,
    topic_prefix,
    as_json,
):
    """Send a top-up over MQTT and wait for the meter's signed answer.

    \b
    Publishes to <prefix>/<id>/topup (QoS 1) and waits on <prefix>/<id>/ack.
    Exit status: 0 accepted, 2 refused by the meter (the reason is printed),
    3 no answer in time (it may still be delivered: repeat with the same
    --token-id, the meter credits a token id once), 4 broker unreachable
    (nothing was sent), 5 the LoRaWAN bridge did not forward it (its reason,
    from <prefix>/<id>/bridge, is printed). 1 and 2 also mean a bad request,
    as for every command.
    """
    key, _ = _meter_key(key_path, meter_id, revision)
    decimals = _decimals(key_path, meter_id, decimals)
    try:
        meter = core.parse_meter_id(meter_id)
        units = core.parse_money(amount, decimals)
        if units < 1:
            raise core.VendError("amount must be positive")
        if fmt == "compact":
            if core.amount_field(units) is None:
                near = [
                    core.format_money(a, decimals)
                    for a in core.representable_near(units)
                    if a is not None
                ]
                raise core.VendError(
                    "%s can't be carried exactly by a compact token (nearest: %s)"
                    % (amount, " or ".join(near))
                )
            data = core.compact_credit(key, token_id, units).encode()
        else:
            issued, expiry = _issue_times(issued, expiry, valid_for)
            data = core.envelope(key, revision, meter, token_id, issued, expiry, "credit", units)
    except core.VendError as e:
        _fail(e)
    money = core.format_money(units, decimals)

    def wanted(m):
        return m.get("meter") == str(meter) and m.get("token") == token_id and "result" in m

    ack = _exchange(
        host, port, timeout, meter, topic_prefix, key, "topup", data,
        "the top-up (token %d, %s)" % (token_id, money), wanted,
        "sending it again with the same --token-id is safe (a token id is credited once)",
        ("token", token_id),
    )  # fmt: skip
    result, balance = ack.get("result"), ack.get("balance", "?")
    if result == "accepted":
        line = "accepted: meter %d credited token %d (%s); balance %s" % (
            meter, token_id, money, balance
        )  # fmt: skip
    else:
        line = "refused: meter %d answered token %d with %s (code %s); balance %s" % (
            meter, token_id, result, ack.get("code", "?"), balance
        )  # fmt: skip
        if result == "used":
            line += " - this token id was credited before (an earlier send of this top-up?)"
    _report(ack, line, result == "accepted", as_json)


def _tariff_arg(text):
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                text = f.read().decode()
        except OSError as e:
            _fail("--tariff %s: %s" % (text, e))
    try:
        return json.loads(text)
    except ValueError as e:
        _fail("--tariff: a JSON object expected (%s)" % e)


@main.command()
@_key_option
@_meter_id_option
@click.option(
    "--cmd-id", type=int, required=True, help="Command id: strictly increasing per meter."
)
@click.option(
    "--op", required=True, type=click.Choice(["tariff", "thresholds", "relay", "report"])
)
@click.option("--action", type=click.Choice(["open", "close"]), help="relay: open or close.")
@click.option(
    "--tariff",
    "tariff_text",
    help='tariff: the tariff as JSON, e.g. \'{"type":"flat","price_per_kwh":"0.2500"}\', '
    "or @FILE.",
)
@click.option("--from", "from_", help="tariff: activation, local time YYYY-MM-DDTHH:MM[:SS].")
@click.option("--low-credit", help="thresholds: a decimal amount.")
@click.option("--reconnect-min", help="thresholds: a decimal amount.")
@click.option("--emergency-credit", help="thresholds: a decimal amount.")
@click.option("--max-power-w", type=int, help="thresholds: watts (0 = no limit).")
@click.option("--low-credit-repeat-s", type=int, help="thresholds: seconds.")
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@_mqtt_options
def cmd(
    key_path,
    meter_id,
    cmd_id,
    op,
    action,
    tariff_text,
    from_,
    low_credit,
    reconnect_min,
    emergency_credit,
    max_power_w,
    low_credit_repeat_s,
    revision,
    host,
    port,
    timeout,
    topic_prefix,
    as_json,
):
    """Send a signed command over MQTT and wait for the meter's signed answer.

    \b
    --op relay --action open|close
    --op tariff --tariff JSON|@FILE [--from YYYY-MM-DDTHH:MM[:SS]]
    --op thresholds [--low-credit X] [--reconnect-min X] [--emergency-credit X]
                    [--max-power-w W] [--low-credit-repeat-s S]
    --op report     (the meter publishes its state)
    Publishes to <prefix>/<id>/cmd (QoS 1) and waits on <prefix>/<id>/ack.
    Exit status as for `send`: 0 accepted, 2 refused/old/mac, 3 no answer,
    4 broker unreachable, 5 the LoRaWAN bridge did not forward it.
    """
    from tools.vend import messages

    key, _ = _meter_key(key_path, meter_id, revision)
    try:
        meter = core.parse_meter_id(meter_id)
    except core.VendError as e:
        _fail(e)
    fields = {
        "action": action,
        "tariff": _tariff_arg(tariff_text),
        "from": from_,
        "low_credit": low_credit,
        "reconnect_min": reconnect_min,
        "emergency_credit": emergency_credit,
        "max_power_w": max_power_w,
        "low_credit_repeat_s": low_credit_repeat_s,
    }
    try:
        payload = messages.make_cmd(key, meter, cmd_id, op, **fields)
    except ValueError as e:
        _fail(e)
    what = "the command %d (%s%s)" % (cmd_id, op, " " + action if action else "")

    def wanted(m):
        return m.get("meter") == str(meter) and m.get("cmd") == cmd_id and "result" in m

    ack = _exchange(
        host, port, timeout, meter, topic_prefix, key, "cmd", payload, what, wanted,
        "sending it again with the same --cmd-id is safe (a command id is applied once)",
        ("cmd", cmd_id),
    )  # fmt: skip
    result = ack.get("result")
    if result == "accepted":
        line = "accepted: meter %d applied %s" % (meter, what)
    else:
        line = "%s: meter %d did not apply %s" % (result, meter, what)
        if ack.get("error"):
            line += ": %s" % ack["error"]
        elif result == "old":
            line += ": its id is not above the last one the meter took (use a higher --cmd-id;"
            line += " a repeat of an unanswered command was applied the first time)"
        elif result == "mac":
            line += ": it could not verify the command (wrong key store or --revision?)"
    _report(ack, line, result == "accepted", as_json)
