"""A local HTTP stand-in for the few Stripe endpoints edgetune uses, for the real `stripe` SDK.

Stripe is unreachable from tests and stripe-mock is not installable, so this small FastAPI app
serves `POST /v1/customers` and `POST /v1/billing/meter_events` the way Stripe documents them:

* a secret key in `Authorization: Bearer` (401 otherwise);
* form-encoded bodies with Stripe's bracket notation (`payload[value]=...`);
* idempotency: the same `Idempotency-Key` with the same parameters replays the first response
  (with `Idempotent-Replayed: true`); with other parameters it is a 400 `idempotency_error`;
  requests that fail validation store no result, as on Stripe;
* meter events: a known `event_name`, a `payload` with `stripe_customer_id` of a customer that
  exists and a whole-number `value`, a `timestamp` within the past 35 days or 5 minutes ahead, and
  an `identifier` unique among accepted events.

`drop_responses` makes the next N successful meter-event calls answer 503 after the event is
stored (a response lost on the wire): the client's retry must be replayed, never billed twice.
Webhooks are signed locally with Stripe's scheme: `t=<ts>,v1=<hex hmac-sha256(secret, "t.body")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.settings_env import settings_env

API_KEY = "sk_test_edgetune_standin"
WEBHOOK_SECRET = "whsec_edgetune_standin_secret"
EVENT_NAME = "edgetune_usage_microusd"
MAX_AGE_S = 35 * 86400


@dataclass
class StandinState:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    meter_events: list[dict[str, Any]] = field(default_factory=list)
    idempotent: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every call: path, key, replayed
    drop_responses: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events_for(self, customer_id: str) -> list[dict[str, Any]]:
        return [e for e in self.meter_events if e["payload"]["stripe_customer_id"] == customer_id]


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding, nested one level: `metadata[k]=v` -> {"metadata": {"k": "v"}}."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        if "[" in key and key.endswith("]"):
            outer, inner = key[:-1].split("[", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return out


def _error(status: int, type_: str, message: str, param: str | None = None) -> JSONResponse:
    err = {"type": type_, "message": message, **({"param": param} if param else {})}
    return JSONResponse({"error": err}, status_code=status)


def _check_meter_event(state: StandinState, p: dict[str, Any]) -> JSONResponse | None:
    payload = p.get("payload") or {}
    if p.get("event_name") != EVENT_NAME:
        return _error(400, "invalid_request_error", "No active meter for this event_name", "event_name")
    if payload.get("stripe_customer_id") not in state.customers:
        return _error(400, "invalid_request_error", "No such customer", "payload[stripe_customer_id]")
    if not str(payload.get("value", "")).isdigit():
        return _error(400, "invalid_request_error", "value must be a whole number", "payload[value]")
    ts = int(p.get("timestamp") or time.time())
    if not time.time() - MAX_AGE_S <= ts <= time.time() + 300:
        return _error(400, "invalid_request_error", "timestamp out of range", "timestamp")
    identifier = p.get("identifier") or f"gen_{secrets.token_hex(8)}"
    if any(e["identifier"] == identifier for e in state.meter_events):
        return _error(400, "invalid_request_error", "An event with this identifier exists", "identifier")
    return None


def _create_meter_event(state: StandinState, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    event = {
        "object": "billing.meter_event",
        "created": int(time.time()),
        "event_name": p["event_name"],
        "identifier": p.get("identifier") or f"gen_{secrets.token_hex(8)}",
        "livemode": False,
        "payload": dict(p["payload"]),
        "timestamp": int(p.get("timestamp") or time.time()),
    }
    state.meter_events.append(event)
    return 200, event


def _create_customer(state: StandinState, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    cid = f"cus_{secrets.token_hex(7)}"
    customer: dict[str, Any] = {
        "id": cid,
        "object": "customer",
        "created": int(time.time()),
        "livemode": False,
        "name": p.get("name"),
        "metadata": p.get("metadata") or {},
    }
    state.customers[cid] = customer
    return 200, customer


def create_app(state: StandinState) -> FastAPI:
    app = FastAPI()

    async def handle(request: Request, check: Any, create: Any) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        params = parse_form(await request.body())
        key = request.headers.get("idempotency-key")
        with state.lock:
            state.requests.append({"path": request.url.path, "key": key, "params": params})
            if key and key in state.idempotent:
                path, first, status, body = state.idempotent[key]
                if (path, first) != (request.url.path, params):
                    return _error(
                        400,
                        "idempotency_error",
                        f"Keys for idempotent requests can only be "
                        f"used with the same parameters they were first used with: {key}",
                    )
                state.requests[-1]["replayed"] = True
                return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})
            refused = check(state, params) if check else None
            if refused is not None:  # failed validation: no idempotent result is saved
                return refused
            status, body = create(state, params)
            if key:
                state.idempotent[key] = (request.url.path, params, status, body)
            if request.url.path.endswith("meter_events") and state.drop_responses > 0:
                state.drop_responses -= 1
                return _error(503, "api_error", "response lost (stand-in)")
        return JSONResponse(body, status_code=status)

    @app.post("/v1/customers")
    async def customers(request: Request) -> JSONResponse:
        return await handle(request, None, _create_customer)

    @app.post("/v1/billing/meter_events")
    async def meter_events(request: Request) -> JSONResponse:
        return await handle(request, _check_meter_event, _create_meter_event)

    return app


@dataclass
class StripeStandin:
    base_url: str
    state: StandinState
    server: uvicorn.Server
    thread: threading.Thread

    def reset(self) -> None:
        with self.state.lock:
            self.state.meter_events.clear()
            self.state.requests.clear()
            self.state.drop_responses = 0


def start_standin(port: int) -> StripeStandin:
    state = StandinState()
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    httpx.get(f"{base}/openapi.json").raise_for_status()
    return StripeStandin(base, state, server, thread)


_shared: StripeStandin | None = None


def shared_standin() -> StripeStandin:
    """One stand-in per test process, so customers created by one test stay known to the next."""
    global _shared
    if _shared is None:
        from tests.conftest import free_port

        _shared = start_standin(free_port())
    _shared.reset()
    return _shared


@contextmanager
def stripe_configured(base_url: str) -> Iterator[None]:
    """EDGETUNE_STRIPE_* pointing at the stand-in for this process (the in-process API included)."""
    env = {
        "EDGETUNE_STRIPE_API_KEY": API_KEY,
        "EDGETUNE_STRIPE_API_BASE": base_url,
        "EDGETUNE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "EDGETUNE_STRIPE_METER_EVENT_NAME": EVENT_NAME,
    }
    with settings_env(env):
        yield


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, computed as Stripe does: HMAC-SHA256 of "{t}.{body}"."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event_body(
    type_: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> bytes:
    """A Stripe event as Stripe posts it (API version 2025-03-31.basil and later)."""
    event = {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    return json.dumps(event, separators=(",", ":")).encode()
