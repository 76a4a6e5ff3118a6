"""The office's tables (SQLAlchemy 2 declarative): meters and what they last reported,
customers, agents, payments, sales with their tokens, deliveries, the meters' verified
messages and alerts. Alembic migrations (tools/office/migrations) create exactly these.

Money columns are integers in the meter's minor units (its currency_decimals); times are
naive UTC datetimes. The schema is described for operators in docs/office.md.
"""

import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# Meter states and transports
ACTIVE, RETIRED = "active", "retired"
MQTT, LORAWAN = "mqtt", "lorawan"
# Sale states: pending (on its way), delivered (the meter answered accepted or used),
# refused (the meter answered with a refusal: needs attention)
PENDING, DELIVERED, REFUSED = "pending", "delivered", "refused"


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str | None] = mapped_column(String(32), unique=True)


class Meter(Base):
    __tablename__ = "meters"
    id: Mapped[str] = mapped_column(String(19), primary_key=True)  # decimal, no leading 0
    transport: Mapped[str] = mapped_column(String(16), default=MQTT)
    currency_decimals: Mapped[int] = mapped_column(Integer, default=2)
    tariff: Mapped[str] = mapped_column(Text, default="")  # the meter's tariff as JSON text
    key_revision: Mapped[int] = mapped_column(Integer, default=0)
    key_ref: Mapped[str] = mapped_column(String(64))  # fingerprint of the vending key
    state: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    min_amount: Mapped[int] = mapped_column(BigInteger, default=1)
    next_token_id: Mapped[int] = mapped_column(BigInteger, default=1)
    credit_base: Mapped[int] = mapped_column(BigInteger, default=0)  # credit before the office
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    customer: Mapped[Customer | None] = relationship()
    status: Mapped["MeterStatus | None"] = relationship(back_populates="meter")


class MeterStatus(Base):
    """What the meter last said in verified messages, and the reconciliation."""

    __tablename__ = "meter_status"
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"), primary_key=True)
    boot: Mapped[int | None] = mapped_column(BigInteger)  # (boot, seq) last accepted
    seq: Mapped[int | None] = mapped_column(BigInteger)
    last_seen: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    online: Mapped[bool | None] = mapped_column(Boolean)
    balance: Mapped[int | None] = mapped_column(BigInteger)
    relay: Mapped[str | None] = mapped_column(String(16))
    credit_status: Mapped[str | None] = mapped_column(String(32))
    control_state: Mapped[str | None] = mapped_column(String(32))
    open_reasons: Mapped[int | None] = mapped_column(Integer)
    signal_dbm: Mapped[int | None] = mapped_column(Integer)
    software: Mapped[str | None] = mapped_column(String(64))
    credit_total: Mapped[int | None] = mapped_column(BigInteger)  # from the signed state
    state_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    delivered_total: Mapped[int | None] = mapped_column(BigInteger)  # at the last reconcile
    reconcile: Mapped[str | None] = mapped_column(String(16))  # ok, pending, mismatch
    reconciled_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    meter: Mapped[Meter] = relationship(back_populates="status")


class Agent(Base):
    """A sales agent: sells through the API with a bearer token (kept as its SHA-256)."""

    __tablename__ = "agents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("provider", "provider_ref"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))  # api, webhook:<name>, mpesa, agent:<n>
    provider_ref: Mapped[str] = mapped_column(String(128))  # idempotency key or provider id
    request_sha256: Mapped[str] = mapped_column(String(64))  # what the reference was used for
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="applied")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    received_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")  # the provider's fields, JSON
    sale: Mapped["Sale"] = relationship(back_populates="payment")
    customer: Mapped[Customer | None] = relationship()


class Sale(Base):
    __tablename__ = "sales"
    __table_args__ = (UniqueConstraint("meter_id", "token_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"))
    token_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))  # envelope or compact: what is sent
    token: Mapped[str] = mapped_column(Text)  # envelope hex or 20 digits, sent unchanged
    compact: Mapped[str | None] = mapped_column(String(20))  # same id, for the SMS fallback
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    result: Mapped[str | None] = mapped_column(String(32))  # the meter's answer
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    fallback_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)  # SMS handled
    sms_sent_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    payment: Mapped[Payment] = relationship(back_populates="sale")
    meter: Mapped[Meter] = relationship()
    delivery: Mapped["Delivery"] = relationship(back_populates="sale")


class Delivery(Base):
    __tablename__ = "deliveries"
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    last_attempt_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sale: Mapped[Sale] = relationship(back_populates="delivery")


class Message(Base):
    """A meter's message that verified under its key and was fresh, as received."""

    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[str] = mapped_column(ForeignKey("meters.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # ack, event, state, will
    boot: Mapped[int | None] = mapped_column(BigInteger)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    body: Mapped[str] = mapped_column(Text)


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    meter_id: Mapped[str | None] = mapped_column(ForeignKey("meters.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(64), default="")  # one open alert per kind+ref
    detail: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    cleared_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
