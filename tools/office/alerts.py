"""Alerts: raised once per (meter, kind, ref) while open, cleared when the cause goes.

Kinds: mismatch (reconciliation), tamper (the meter's open reasons), relay_fault and
console (the meter's events), refused (a token the meter refused), silent (no verified
message for `silence_s`), sms (the fallback could not be sent), bridge (the LoRaWAN bridge
did not forward a top-up), key (a meter's messages cannot be checked). docs/office.md
lists what raises and clears each.
"""

from sqlalchemy import select

from tools.office.schema import Alert, utcnow


def _open(s, meter_id, kind, ref):
    return s.scalars(
        select(Alert).where(
            Alert.meter_id == meter_id,
            Alert.kind == kind,
            Alert.ref == ref,
            Alert.cleared_at.is_(None),
        )
    ).first()


def raise_alert(s, meter_id, kind, detail, ref=""):
    """The open alert of (meter, kind, ref), created or its detail updated."""
    a = _open(s, meter_id, kind, str(ref))
    if a is None:
        a = Alert(meter_id=meter_id, kind=kind, ref=str(ref), detail=detail)
        s.add(a)
    else:
        a.detail = detail
    return a


def clear_alert(s, meter_id, kind, ref=""):
    a = _open(s, meter_id, kind, str(ref))
    if a is not None:
        a.cleared_at = utcnow()
    return a


def view(a):
    return {
        "id": a.id,
        "meter": a.meter_id,
        "kind": a.kind,
        "ref": a.ref,
        "detail": a.detail,
        "raised_at": a.raised_at.isoformat(timespec="seconds") + "Z",
        "cleared_at": None
        if a.cleared_at is None
        else a.cleared_at.isoformat(timespec="seconds") + "Z",
    }
