"""The vending CLI: keygen, meter-key, token, manage, decode.

Keys are never printed: key stores and meter key files are written with mode 0600 and
named by a fingerprint (8 hex digits of an HMAC of the key) in the messages.
"""

import sys

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
@click.option("--force", is_flag=True, help="Replace an existing key store.")
def keygen(path, nbytes, force):
    """Create a key store holding a fresh random vending key."""
    try:
        fp = core.keygen(path, int(nbytes), force)
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
@click.option("--force", is_flag=True)
def meter_key(key_path, meter_id, revision, ken, out, force):
    """Write the key file a meter is commissioned with (44 bytes, never printed)."""
    key, _ = _meter_key(key_path, meter_id, revision)
    try:
        core.write_meter_key(out, key, revision, ken, force)
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
@click.option("--decimals", type=click.IntRange(0, 6), default=2, show_default=True)
@click.option("--revision", type=click.IntRange(0, 255), default=0, show_default=True)
@_envelope_options
def token(
    key_path, meter_id, amount, token_id, fmt, decimals, revision, issued, expiry, valid_for
):
    """Print one credit token: 20 digits, or the envelope in hex."""
    key, _ = _meter_key(key_path, meter_id, revision)
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
@click.option("--decimals", type=click.IntRange(0, 6), default=2, show_default=True)
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
@click.option("--decimals", type=click.IntRange(0, 6), default=2, show_default=True)
def decode(key_path, meter_id, token_text, revision, decimals):
    """Explain a token (20 digits or envelope hex) under a meter's key; exit 1 if invalid."""
    key, _ = _meter_key(key_path, meter_id, revision)
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
