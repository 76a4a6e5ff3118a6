"""The office's command line: init-db, meter add / import, agent add, sell, status, alerts,
reconcile, serve (the API and the delivery worker), work (the worker alone).

    python -m tools.office --db sqlite:///office.db --keystore vend.key init-db
    python -m tools.office meter add 12345678 --customer-phone +254700000001
    python -m tools.office sell 12345678 10.00
    python -m tools.office serve

Settings come from --config FILE (TOML), OFFICE_* variables and the options here
(docs/office.md, "Configuration"). Errors name the field and exit with status 1.
"""

import csv
import json
import secrets
import sys

import click

from tools.office import config as config_mod
from tools.office.keys import Keys
from tools.office.sales import SaleError, add_meter, sale_view, sell
from tools.office.store import Store


class Ctx:
    def __init__(self, cfg):
        self.cfg = cfg
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = Store(self.cfg.db_url)
        return self._store

    @property
    def keys(self):
        return Keys(self.cfg.keystore)


def _fail(e):
    raise click.ClickException(str(e))


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=1, sort_keys=True))


@click.group()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--db", "db_url", help="Database URL (default sqlite:///office.db).")
@click.option("--keystore", help="The vending key store (tools/vend keygen).")
@click.option("--mqtt-host")
@click.option("--mqtt-port", type=int)
@click.pass_context
def main(ctx, config_path, db_url, keystore, mqtt_host, mqtt_port):
    """The purchase system: payments in, tokens out, delivered, acknowledged, reconciled."""
    try:
        cfg = config_mod.load(
            config_path,
            db_url=db_url,
            keystore=keystore,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
        )
    except (OSError, ValueError) as e:
        _fail(e)
    ctx.obj = Ctx(cfg)


@main.command("init-db")
@click.pass_obj
def init_db(c):
    """Create or upgrade the schema (Alembic migrations)."""
    c.store.migrate()
    click.echo("schema up to date: %s" % c.store.url.split("@")[-1])


@main.group()
def meter():
    """Meters: add, import from CSV, retire."""


def _add(c, s, row):
    return add_meter(
        s,
        c.keys,
        row["meter"],
        transport=row.get("transport") or "mqtt",
        decimals=int(row.get("decimals") or 2),
        tariff=row.get("tariff") or "",
        key_revision=int(row.get("key_revision") or 0),
        min_amount=int(row.get("min_amount") or 1),
        first_token_id=int(row.get("first_token_id") or 1),
        credit_base=int(row.get("credit_base") or 0),
        customer=(row.get("customer_name") or "", row.get("customer_phone") or ""),
    )


@meter.command("add")
@click.argument("meter_id")
@click.option("--transport", type=click.Choice(["mqtt", "lorawan"]), default="mqtt")
@click.option("--decimals", type=int, default=2, show_default=True)
@click.option("--tariff", default="", help="The meter's tariff (JSON), for the record.")
@click.option("--key-revision", type=int, default=0, show_default=True)
@click.option("--min-amount", type=int, default=1, help="Smallest sale, minor units.")
@click.option("--first-token-id", type=int, default=1, help="Above any id vended before.")
@click.option("--credit-base", type=int, default=0, help="Credit the meter had before.")
@click.option("--customer-name", default="")
@click.option("--customer-phone", default="")
@click.pass_obj
def meter_add(c, meter_id, **opts):
    """Add one meter (its key: the vending key store's, at --key-revision)."""
    try:
        with c.store.session() as s:
            m = _add(c, s, dict(opts, meter=meter_id))
            click.echo(
                "added meter %s (%s, key %s rev %d)"
                % (m.id, m.transport, m.key_ref, m.key_revision)
            )
    except (SaleError, ValueError) as e:
        _fail(e)


@meter.command("import")
@click.argument("csv_path", type=click.File("r"))
@click.pass_obj
def meter_import(c, csv_path):
    """Add the meters of a CSV file (header: meter, transport, decimals, tariff,
    key_revision, min_amount, first_token_id, credit_base, customer_name, customer_phone;
    only meter is required). All or nothing: one bad row adds none."""
    rows = list(csv.DictReader(csv_path))
    try:
        with c.store.session() as s:
            for n, row in enumerate(rows, 2):
                try:
                    _add(c, s, {k.strip(): (v or "").strip() for k, v in row.items() if k})
                except (SaleError, ValueError) as e:
                    raise SaleError("line %d" % n, str(e)) from None
    except SaleError as e:
        _fail(e)
    click.echo("imported %d meters" % len(rows))


@meter.command("retire")
@click.argument("meter_id")
@click.pass_obj
def meter_retire(c, meter_id):
    """Refuse further sales to a meter (its pending deliveries still go)."""
    from tools.office.schema import RETIRED, Meter

    with c.store.session() as s:
        m = s.get(Meter, meter_id)
        if m is None:
            _fail("meter: unknown meter %s" % meter_id)
        m.state = RETIRED
    click.echo("retired meter %s" % meter_id)


@main.group()
def agent():
    """Sales agents (they sell through the API with a bearer token)."""


@agent.command("add")
@click.argument("name")
@click.pass_obj
def agent_add(c, name):
    """Add an agent and print its token once (the store keeps only its SHA-256)."""
    import hashlib

    from tools.office.schema import Agent

    token = secrets.token_urlsafe(24)
    try:
        with c.store.session() as s:
            s.add(Agent(name=name, token_sha256=hashlib.sha256(token.encode()).hexdigest()))
    except Exception as e:  # the name is taken
        _fail("agent: %s cannot be added (%s)" % (name, type(e).__name__))
    click.echo(token)


@main.command("sell")
@click.argument("meter_id")
@click.argument("amount")
@click.option("--reference", help="Receipt or provider reference (default: a fresh one).")
@click.option("--phone", default=None)
@click.option("--name", default=None)
@click.pass_obj
def sell_cmd(c, meter_id, amount, reference, phone, name):
    """Record a sale (an operator's: provider "cli"); the worker delivers it."""
    ref = reference or "cli-" + secrets.token_hex(8)
    try:
        sale, created = sell(
            c.store, c.keys, c.cfg, meter_id, amount, "cli", ref, phone=phone, name=name
        )
    except SaleError as e:
        _fail(e)
    out = sale_view(sale)
    out["created"] = created
    _echo_json(out)


@main.command()
@click.argument("meter_id", required=False)
@click.pass_obj
def status(c, meter_id):
    """Meters with what they last reported, or one meter with its recent sales."""
    from tools.office import report

    _echo_json(report.status(c.store, meter_id))


@main.command()
@click.option("--all", "show_all", is_flag=True, help="Cleared alerts too.")
@click.pass_obj
def alerts(c, show_all):
    """Open alerts (newest first)."""
    from tools.office import report

    _echo_json(report.alerts(c.store, not show_all))


@main.command()
@click.argument("meter_id", required=False)
@click.pass_obj
def reconcile(c, meter_id):
    """Delivered credit against the credit total each meter reports; exit 2 on a mismatch."""
    from tools.office import reconcile as rec

    rows = rec.run(c.store, meter_id)
    _echo_json(rows)
    if any(r["reconcile"] == "mismatch" for r in rows):
        sys.exit(2)


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--no-worker", is_flag=True, help="The API only (run `work` elsewhere).")
@click.pass_obj
def serve(c, host, port, no_worker):
    """The HTTP API (OpenAPI at /docs) and, in the same process, the delivery worker."""
    import uvicorn

    from tools.office.api import make_app

    app = make_app(c.cfg, worker=not no_worker)
    uvicorn.run(
        app,
        host=host or c.cfg.listen_host,
        port=port or c.cfg.listen_port,
        log_level="warning",
    )


@main.command()
@click.pass_obj
def work(c):
    """The delivery worker alone: deliveries, ingest, SMS fallback, silence checks."""
    from tools.office.worker import Worker

    Worker(c.cfg).run()
