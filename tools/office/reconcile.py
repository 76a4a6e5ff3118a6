"""Reconciliation: per meter, the credit the office delivered against the credit total the
meter reports in its signed state (credit_total: every top-up it took, tokens typed on
its keypad included).

    delivered = credit_base + the amounts of its sales answered accepted or used
    in_flight = the amounts of its sales still pending
    ok        reported == delivered
    pending   delivered < reported <= delivered + in_flight   (answers still on their way,
              or a token from the SMS fallback typed in before the re-send is answered)
    mismatch  anything else: credit the office never sold, or sold credit the meter lost
A mismatch raises an alert (kind "mismatch"); ok clears it. Meters whose state carries no
credit_total (the LoRaWAN bridge's) stay "unknown".
"""

from sqlalchemy import func, select

from tools.office import money
from tools.office.alerts import clear_alert, raise_alert
from tools.office.schema import DELIVERED, PENDING, Meter, MeterStatus, Sale, utcnow


def _sum(s, meter_id, state):
    q = select(func.coalesce(func.sum(Sale.amount), 0)).where(
        Sale.meter_id == meter_id, Sale.state == state
    )
    return int(s.scalar(q))


def reconcile_meter(s, meter, status):
    """Update status.reconcile (ok / pending / mismatch / unknown) and the alert."""
    delivered = meter.credit_base + _sum(s, meter.id, DELIVERED)
    status.delivered_total = delivered
    status.reconciled_at = utcnow()
    reported = status.credit_total
    if reported is None:
        status.reconcile = "unknown"
        return status.reconcile
    in_flight = _sum(s, meter.id, PENDING)
    if reported == delivered:
        status.reconcile = "ok"
        clear_alert(s, meter.id, "mismatch")
    elif delivered < reported <= delivered + in_flight:
        status.reconcile = "pending"
    else:
        status.reconcile = "mismatch"
        d = meter.currency_decimals
        raise_alert(
            s,
            meter.id,
            "mismatch",
            "meter reports %s credited, the office delivered %s (%s pending)"
            % (money.text(reported, d), money.text(delivered, d), money.text(in_flight, d)),
        )
    return status.reconcile


def view(meter, status):
    d = meter.currency_decimals
    return {
        "meter": meter.id,
        "reconcile": (status.reconcile if status else None) or "unknown",
        "delivered": money.text(status.delivered_total, d) if status else None,
        "reported": money.text(status.credit_total, d) if status else None,
    }


def run(store, meter_id=None):
    """Reconcile one meter or every meter; their views."""
    out = []
    with store.session() as s:
        q = select(Meter).order_by(Meter.id)
        if meter_id:
            q = q.where(Meter.id == meter_id)
        for m in s.scalars(q):
            st = s.get(MeterStatus, m.id)
            if st is None:
                st = MeterStatus(meter_id=m.id)
                s.add(st)
            reconcile_meter(s, m, st)
            out.append(view(m, st))
    return out
