"""The office's HTTP API (FastAPI; OpenAPI at /docs, the schema at /openapi.json).

  POST /payments                    a payment; header Idempotency-Key (same key, same sale)
  POST /webhooks/{provider}         a provider's callback, X-Signature: sha256=<HMAC hex>
  POST /mpesa/{secret}/c2b/validation, /mpesa/{secret}/c2b/confirmation
                                    Safaricom M-Pesa (Daraja) C2B callbacks; the account
                                    number (BillRefNumber) is the meter number
  POST /agent/sales                 an agent's sale; Authorization: Bearer <agent token>
  GET  /meters, /meters/{id}, /sales/{id}, /alerts, /reconcile, /health

Errors are JSON naming the field: {"error": {"field": "amount", "message": "..."}}, with
404 (unknown meter), 409 (retired meter, a reference reused for another request), 401
(credentials), 422 (a value). A refused request writes nothing. Request and answer shapes
are in docs/office.md ("API").
"""

import contextlib
import hashlib
import hmac
import json
import threading

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tools.office import reconcile as rec
from tools.office import report
from tools.office.keys import Keys
from tools.office.sales import SaleError, meter_id_of, sale_view, sell
from tools.office.schema import RETIRED, Agent, Meter
from tools.office.store import Store

MPESA_INVALID_ACCOUNT = "C2B00012"  # Daraja C2B validation: invalid account number
MPESA_INVALID_AMOUNT = "C2B00013"
MPESA_OTHER = "C2B00016"


class PaymentIn(BaseModel):
    meter: str = Field(description="The meter's number (1 to 19 digits).", examples=["12345678"])
    amount: str = Field(description='Decimal string in the meter\'s currency, e.g. "10.00".')
    phone: str | None = Field(None, description="The customer's phone (for the SMS fallback).")
    name: str | None = None


class WebhookIn(PaymentIn):
    reference: str = Field(description="The provider's unique payment reference.")


class AgentSaleIn(PaymentIn):
    pass


def _error(field, message, status):
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def make_app(cfg, worker=False, store=None, keys=None):
    """The API on cfg's store; worker=True also runs the delivery worker in a thread."""
    store = store or Store(cfg.db_url)
    keys = keys or Keys(cfg.keystore)
    state = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if worker:
            from tools.office.worker import Worker

            w = Worker(cfg, store=store, keys=keys)
            t = threading.Thread(target=w.run, name="office-worker", daemon=True)
            t.start()
            state["worker"] = w
        yield
        if "worker" in state:
            state["worker"].stop()
            t.join(10)

    app = FastAPI(
        title="Prepaid meter office",
        summary="Payments in, tokens out, delivered to the meters and reconciled.",
        lifespan=lifespan,
    )

    @app.exception_handler(SaleError)
    async def sale_error(request, e):
        return _error(e.field, e.message, e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e):
        err = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid"}
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "header", "query", "path")]
        return _error(".".join(loc) or "body", err.get("msg", "invalid"), 422)

    def operator(authorization):
        if cfg.api_key and not hmac.compare_digest(
            (authorization or "").encode(), ("Bearer " + cfg.api_key).encode()
        ):
            raise SaleError("Authorization", "the operator's bearer token is required", 401)

    def _woken(sale, created):
        if created and "worker" in state:
            state["worker"].wake()  # send it now, not at the worker's next poll
        return sale, created

    def _sell(body, provider, reference):
        """The sale of a payment body (PaymentIn) and its HTTP answer."""
        sale, created = _woken(
            *sell(
                store,
                keys,
                cfg,
                body.meter,
                body.amount,
                provider,
                reference,
                request=body.model_dump(),
                phone=body.phone,
                name=body.name,
            )  # fmt: skip
        )
        return JSONResponse(sale_view(sale), status_code=201 if created else 200)

    @app.post("/payments", status_code=201, summary="Take a payment: a sale and its token")
    def payment(
        body: PaymentIn,
        idempotency_key: str = Header(description="Unique per payment; a retry sends it again."),
        authorization: str | None = Header(None),
    ):
        operator(authorization)
        return _sell(body, "api", idempotency_key)

    @app.post("/webhooks/{provider}", status_code=201, summary="A payment provider's callback")
    async def webhook(provider: str, request: Request, x_signature: str | None = Header(None)):
        secret = cfg.webhook_secrets.get(provider)
        if not secret:
            raise SaleError("provider", "no webhook secret configured for %r" % provider, 404)
        raw = await request.body()
        want = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest((x_signature or "").encode(), want.encode()):
            raise SaleError("X-Signature", "the HMAC-SHA256 of the body does not verify", 401)
        try:
            body = WebhookIn.model_validate_json(raw)
        except ValueError as e:
            err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("body",), "msg": str(e)}
            raise SaleError(".".join(str(x) for x in err["loc"]) or "body", err["msg"]) from None
        return await run_in_threadpool(_sell, body, "webhook:" + provider, body.reference)

    def _sellable(mid):
        with store.session() as s:
            m = s.get(Meter, mid)
            return m is not None and m.state != RETIRED

    def mpesa_fields(secret, raw):
        if not cfg.mpesa_token or not hmac.compare_digest(
            secret.encode(), cfg.mpesa_token.encode()
        ):
            raise SaleError("path", "unknown M-Pesa callback URL", 404)
        try:
            doc = json.loads(raw, parse_float=str, parse_int=str)  # amounts stay text
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise SaleError("body", "a JSON object expected")
        return doc

    @app.post("/mpesa/{secret}/c2b/validation", summary="M-Pesa C2B validation (Daraja)")
    async def mpesa_validation(secret: str, request: Request):
        doc = mpesa_fields(secret, await request.body())
        try:
            mid = meter_id_of(str(doc.get("BillRefNumber", "")).strip(), "BillRefNumber")
        except SaleError:
            return {"ResultCode": MPESA_INVALID_ACCOUNT, "ResultDesc": "Rejected"}
        if not await run_in_threadpool(_sellable, mid):
            return {"ResultCode": MPESA_INVALID_ACCOUNT, "ResultDesc": "Rejected"}
        return {"ResultCode": "0", "ResultDesc": "Accepted"}

    @app.post("/mpesa/{secret}/c2b/confirmation", summary="M-Pesa C2B confirmation (Daraja)")
    async def mpesa_confirmation(secret: str, request: Request):
        doc = mpesa_fields(secret, await request.body())
        ref = str(doc.get("TransID") or "")
        names = " ".join(str(doc.get(k) or "") for k in ("FirstName", "MiddleName", "LastName"))
        request_fields = {
            k: doc.get(k) for k in ("TransID", "TransAmount", "BillRefNumber", "MSISDN")
        }
        sale, created = await run_in_threadpool(
            sell,
            store,
            keys,
            cfg,
            str(doc.get("BillRefNumber", "")).strip(),
            str(doc.get("TransAmount", "")),
            "mpesa",
            ref,
            request=request_fields,
            phone=str(doc.get("MSISDN") or "") or None,
            name=" ".join(names.split()) or None,
            detail=doc,
        )
        _woken(sale, created)
        return {
            "ResultCode": 0,
            "ResultDesc": "Accepted",
            "sale": sale.id,
            "token_id": sale.token_id,
        }

    @app.post("/agent/sales", status_code=201, summary="An agent's sale")
    def agent_sale(
        body: AgentSaleIn,
        idempotency_key: str = Header(),
        authorization: str | None = Header(None),
    ):
        token = (authorization or "").removeprefix("Bearer ")
        digest = hashlib.sha256(token.encode()).hexdigest()
        with store.session() as s:
            a = s.scalars(select(Agent).where(Agent.token_sha256 == digest, Agent.active)).first()
            name = a.name if a is not None and token else None
        if name is None:
            raise SaleError("Authorization", "an agent's bearer token is required", 401)
        return _sell(body, "agent:" + name, idempotency_key)

    @app.get("/meters", summary="Every meter with what it last reported")
    def meters(authorization: str | None = Header(None)):
        operator(authorization)
        return report.status(store)

    @app.get("/meters/{meter_id}", summary="One meter and its latest sales")
    def meter(meter_id: str, authorization: str | None = Header(None)):
        operator(authorization)
        out = report.status(store, meter_id_of(meter_id))
        if out is None:
            raise SaleError("meter", "unknown meter %s" % meter_id, 404)
        return out

    @app.get("/sales/{sale_id}", summary="One sale and its delivery")
    def sale(sale_id: int, authorization: str | None = Header(None)):
        operator(authorization)
        out = report.sale(store, sale_id)
        if out is None:
            raise SaleError("sale", "unknown sale %d" % sale_id, 404)
        return out

    @app.get("/alerts", summary="Alerts, open ones unless all=true")
    def alerts(
        all: bool = False, meter: str | None = None, authorization: str | None = Header(None)
    ):
        operator(authorization)
        return report.alerts(store, not all, meter)

    @app.get("/reconcile", summary="Delivered credit against each meter's reported total")
    def reconcile(meter: str | None = None, authorization: str | None = Header(None)):
        operator(authorization)
        return rec.run(store, meter)

    @app.get("/health")
    def health():
        return {"ok": True, "worker": "worker" in state}

    return app
