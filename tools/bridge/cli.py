"""The bridge's command line: `run` (serve until SIGINT/SIGTERM) and `check` (validate the
configuration and show each meter's mapping; keys are never printed)."""

import signal
import sys
import threading

import click

from tools.bridge import config as bconfig
from tools.bridge import mapping
from tools.vend import core


def _config(path):
    try:
        return bconfig.load(path)
    except bconfig.ConfigError as e:
        raise click.ClickException("%s: %s" % (path, e)) from e


def _config_option(f):
    return click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help="The bridge's JSON configuration.",
    )(f)


@click.group()
def main():
    """LoRaWAN bridge: back office top-ups to network-server downlinks, uplinks back as the
    meters' signed messages (ChirpStack v4, The Things Stack v3)."""


@main.command()
@_config_option
def check(config_path):
    """Validate the configuration and the key store; print each meter's topics."""
    cfg = _config(config_path)
    try:
        core.load_keystore(cfg.keystore)
    except core.VendError as e:
        raise click.ClickException(str(e)) from e
    warn = core.keystore_mode_warning(cfg.keystore)
    if warn:
        click.echo(warn, err=True)
    for mid, m in sorted(cfg.meters.items()):
        dl = mapping.Downlink("compact", b"", None)
        topic = mapping.downlink_message(m, dl)[0]
        click.echo(
            "meter %d: %s %s, %s %s (downlinks up to %d bytes: %s)"
            % (mid, m.network, m.application_id, m.region, m.dr_text, m.max_bytes,
               "compact and envelope" if m.max_bytes >= core.ENVELOPE_SIZE else "compact only")
        )  # fmt: skip
        click.echo("  %s/%d/topup -> %s" % (cfg.prefix, mid, topic))
        click.echo("  %s -> %s/%d/{ack,event,state}" % (mapping.uplink_filter(m), cfg.prefix, mid))


@main.command()
@_config_option
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to connect and subscribe at start.")  # fmt: skip
def run(config_path, timeout):
    """Run the bridge until SIGINT or SIGTERM."""
    from tools.bridge import service

    cfg = _config(config_path)
    warn = core.keystore_mode_warning(cfg.keystore)
    if warn:
        click.echo(warn, err=True)
    try:
        bridge = service.Bridge(cfg)
        bridge.start(timeout)
    except (core.VendError, service.BridgeError) as e:
        raise click.ClickException(str(e)) from e
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    click.echo("bridge: running", err=True)
    while not stop.wait(0.5):
        pass
    bridge.stop()
    click.echo("bridge: stopped; %s" % " ".join("%s=%d" % kv for kv in bridge.stats.items()),
               err=True)  # fmt: skip
    sys.exit(0)
