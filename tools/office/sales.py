"""Meters and sales in the store: adding meters, and a sale recorded with its payment, its
token id and its tokens in one transaction.

The token id comes from the meter's row (`next_token_id`), read under a row lock
(SELECT ... FOR UPDATE on PostgreSQL; SQLite's write transactions are serialised by
BEGIN IMMEDIATE) and advanced in the same transaction that inserts the sale, so two
sales to one meter never share an id and an id is never handed out twice; the unique
(meter, token id) constraint backs it. A payment's (provider, reference) is unique: the
same reference returns the sale it made the first time, never a second one.
"""

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tools.office import money
from tools.office.keys import KeyError_
from tools.office.schema import (
    ACTIVE,
    LORAWAN,
    MQTT,
    RETIRED,
    Customer,
    Delivery,
    Meter,
    Payment,
    Sale,
    utcnow,
)
from tools.vend import core


class SaleError(ValueError):
    """A request refused, naming the field: field, message and an HTTP status."""

    def __init__(self, field, message, status=422):
        super().__init__("%s: %s" % (field, message))
        self.field, self.message, self.status = field, message, status

    def as_json(self):
        return {"error": {"field": self.field, "message": self.message}}


def request_digest(obj):
    """SHA-256 of a request's canonical JSON: what a reference or key was first used for."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def meter_id_of(text, field="meter"):
    try:
        return str(core.parse_meter_id(text))
    except core.VendError as e:
        raise SaleError(field, str(e).split(": ", 1)[-1]) from None


def add_meter(
    s,
    keys,
    meter_id,
    transport=MQTT,
    decimals=2,
    tariff="",
    key_revision=0,
    min_amount=1,
    first_token_id=1,
    credit_base=0,
    customer=None,
):
    """Insert a meter (SaleError if it exists or a value is out of range)."""
    mid = meter_id_of(meter_id)
    if transport not in (MQTT, LORAWAN):
        raise SaleError("transport", "mqtt or lorawan, not %r" % transport)
    if not 0 <= decimals <= 6:
        raise SaleError("decimals", "0 to 6")
    if not 0 <= key_revision <= 255:
        raise SaleError("key_revision", "0 to 255")
    if not 1 <= first_token_id <= core.TOKEN_ID_MAX:
        raise SaleError("first_token_id", "1 to %d" % core.TOKEN_ID_MAX)
    if s.get(Meter, mid) is not None:
        raise SaleError("meter", "meter %s is already in the store" % mid, 409)
    m = Meter(
        id=mid,
        transport=transport,
        currency_decimals=decimals,
        tariff=tariff or "",
        key_revision=key_revision,
        key_ref=keys.fingerprint(),
        state=ACTIVE,
        min_amount=min_amount,
        next_token_id=first_token_id,
        credit_base=credit_base,
    )
    if customer:
        m.customer = customer_of(s, *customer)
    s.add(m)
    s.flush()
    return m


def customer_of(s, name, phone):
    """The customer with this phone (created, or its name filled in), or None."""
    if not phone:
        return None
    c = s.scalars(select(Customer).where(Customer.phone == phone)).first()
    if c is None:
        c = Customer(name=name or "", phone=phone)
        s.add(c)
    elif name and not c.name:
        c.name = name
    return c


def parse_amount(text, decimals):
    try:
        return money.parse(text, decimals)
    except money.AmountError as e:
        raise SaleError("amount", str(e)) from None


def sell(
    store,
    keys,
    cfg,
    meter,
    amount,
    provider,
    reference,
    request=None,
    phone=None,
    name=None,
    detail=None,
):
    """The sale of a payment: (Sale, created). `amount` a decimal string (the meter's
    decimals). The same (provider, reference) for the same request returns the first
    sale (created False); for another request it is refused (409)."""
    mid = meter_id_of(meter)
    if not reference or len(reference) > 128:
        raise SaleError("reference", "1 to 128 characters")
    digest = request_digest(request if request is not None else {"meter": mid, "amount": amount})
    for attempt in range(2):
        try:
            with store.session() as s:
                found = _existing(s, provider, reference, digest)
                if found is not None:
                    return found, False
                sale = _new_sale(
                    s, keys, cfg, mid, amount, provider, reference, digest, phone, name, detail
                )
            return sale, True
        except IntegrityError:  # the same reference, committed meanwhile by another
            if attempt:
                raise
    raise AssertionError("unreachable")


def _existing(s, provider, reference, digest):
    p = s.scalars(
        select(Payment).where(Payment.provider == provider, Payment.provider_ref == reference)
    ).first()
    if p is None:
        return None
    if p.request_sha256 != digest:
        raise SaleError(
            "reference",
            "%r was already used by %s for another request" % (reference, provider),
            409,
        )
    sale = p.sale
    sale.meter  # noqa: B018 - loaded for the caller, outside the session
    return sale


def _new_sale(s, keys, cfg, mid, amount, provider, reference, digest, phone, name, detail):
    m = s.get(Meter, mid, with_for_update=True)
    if m is None:
        raise SaleError("meter", "unknown meter %s" % mid, 404)
    if m.state == RETIRED:
        raise SaleError("meter", "meter %s is retired" % mid, 409)
    units = parse_amount(amount, m.currency_decimals)
    if units < max(1, m.min_amount):
        raise SaleError(
            "amount",
            "%s is below the minimum %s"
            % (amount, core.format_money(max(1, m.min_amount), m.currency_decimals)),
        )
    if units > 0xFFFFFFFF:
        raise SaleError("amount", "too large for one token")
    token_id = m.next_token_id
    if token_id > core.TOKEN_ID_MAX:
        raise SaleError("meter", "meter %s has used every token id" % mid, 409)
    try:
        key = keys.meter_key(m)
    except KeyError_ as e:
        raise SaleError("meter", str(e), 503) from None
    compact = None
    if token_id <= core.TOKEN_ID_MAX_COMPACT and core.amount_field(units) is not None:
        compact = core.compact_credit(key, token_id, units)
    if m.transport == LORAWAN:
        if compact is None:
            near = [
                core.format_money(a, m.currency_decimals)
                for a in core.representable_near(units)
                if a is not None
            ]
            raise SaleError(
                "amount",
                "%s can't be carried by the compact token a LoRaWAN meter takes (nearest: %s)"
                % (amount, " or ".join(near)),
            )
        fmt, token = "compact", compact
    else:
        issued = core.stamp_now()
        expiry = issued + cfg.envelope_valid_s if cfg.envelope_valid_s else 0
        data = core.envelope(
            key, m.key_revision, int(mid), token_id, issued, expiry, "credit", units
        )
        fmt, token = "envelope", data.hex()
    m.next_token_id = token_id + 1
    customer = customer_of(s, name, phone) or m.customer
    p = Payment(
        provider=provider,
        provider_ref=reference,
        request_sha256=digest,
        meter_id=mid,
        amount=units,
        customer=customer,
        detail=json.dumps(detail or {}, sort_keys=True),
    )
    sale = Sale(
        payment=p,
        meter=m,
        token_id=token_id,
        amount=units,
        format=fmt,
        token=token,
        compact=compact,
    )
    sale.delivery = Delivery(next_attempt_at=utcnow())
    s.add_all([p, sale])
    s.flush()
    return sale


def sale_view(sale, with_token=True):
    """A sale as the API and the CLI show it (amounts as decimal strings)."""
    m = sale.meter
    out = {
        "sale": sale.id,
        "meter": sale.meter_id,
        "token_id": sale.token_id,
        "amount": money.text(sale.amount, m.currency_decimals),
        "format": sale.format,
        "state": sale.state,
        "result": sale.result,
        "created_at": _iso(sale.created_at),
        "delivered_at": _iso(sale.delivered_at),
        "sms_sent_at": _iso(sale.sms_sent_at),
    }
    if with_token:
        out["compact"] = sale.compact
    return out


def _iso(t):
    return None if t is None else t.isoformat(timespec="seconds") + "Z"
