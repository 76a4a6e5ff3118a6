"""What the CLI's status and alerts commands and the API's read endpoints show."""

from sqlalchemy import select

from tools.office import alerts as alerts_mod
from tools.office import money
from tools.office.sales import _iso, sale_view
from tools.office.schema import Alert, Meter, MeterStatus, Sale


def meter_view(m, st):
    d = m.currency_decimals
    out = {
        "meter": m.id,
        "transport": m.transport,
        "state": m.state,
        "decimals": d,
        "next_token_id": m.next_token_id,
        "customer": None
        if m.customer is None
        else {"name": m.customer.name, "phone": m.customer.phone},
    }
    st = st or MeterStatus()
    out.update(
        last_seen=_iso(st.last_seen),
        online=st.online,
        balance=money.text(st.balance, d),
        relay=st.relay,
        credit_status=st.credit_status,
        control_state=st.control_state,
        open_reasons=st.open_reasons,
        signal_dbm=st.signal_dbm,
        software=st.software,
        credit_total=money.text(st.credit_total, d),
        delivered_total=money.text(st.delivered_total, d),
        reconcile=st.reconcile or "unknown",
    )
    return out


def status(store, meter_id=None, recent=10):
    """Every meter's view, or one meter's with its `recent` latest sales (None: unknown)."""
    with store.session() as s:
        if meter_id is None:
            ms = s.scalars(select(Meter).order_by(Meter.id)).all()
            return [meter_view(m, s.get(MeterStatus, m.id)) for m in ms]
        m = s.get(Meter, str(meter_id))
        if m is None:
            return None
        out = meter_view(m, s.get(MeterStatus, m.id))
        sales = s.scalars(
            select(Sale).where(Sale.meter_id == m.id).order_by(Sale.id.desc()).limit(recent)
        ).all()
        out["sales"] = [
            dict(
                sale_view(x, with_token=False),
                attempts=x.delivery.attempts,
                last_error=x.delivery.last_error,
            )
            for x in sales
        ]
        return out


def alerts(store, open_only=True, meter_id=None):
    with store.session() as s:
        q = select(Alert).order_by(Alert.id.desc())
        if open_only:
            q = q.where(Alert.cleared_at.is_(None))
        if meter_id:
            q = q.where(Alert.meter_id == meter_id)
        return [alerts_mod.view(a) for a in s.scalars(q)]


def sale(store, sale_id):
    with store.session() as s:
        x = s.get(Sale, sale_id)
        if x is None:
            return None
        return dict(sale_view(x), attempts=x.delivery.attempts, last_error=x.delivery.last_error)
