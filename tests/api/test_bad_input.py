"""Bad input is a 4xx in the error shape naming the field, never a 5xx (issue 19, item 5): deeply
nested JSON (an upload row, a tool call body), a NUL in a path id or a query value on PostgreSQL, an
out-of-range usage time, a signed Stripe webhook that is not an event object; a database that is
down is a 503 with Retry-After naming no address, and an unexpected error a generic 500."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from domain.job_config import MAX_ID_LENGTH, MAX_JSON_DEPTH, MAX_MODEL_LENGTH, MAX_UNIX_TIME
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import free_port
from tests.support.stripe_standin import shared_standin, sign, stripe_configured

DEEP = "[" * 5000 + "]" * 5000  # past the JSON parser's own recursion limit


def error_of(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    """The response is `status` in OpenAI's error shape naming `param`; returns the error object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert err["param"] == param, err
    assert "Traceback" not in r.text and "127.0.0.1" not in r.text
    return dict(err)


@pytest.fixture()
def h(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _upload(server: Any, h: dict[str, str], data: bytes) -> httpx.Response:
    files = {"file": ("t.jsonl", io.BytesIO(data))}
    return server.api.post("/files", files=files, data={"purpose": "fine-tune"}, headers=h)


def test_a_deeply_nested_jsonl_row_is_a_400_naming_its_line(server, h) -> None:
    good = jsonl(sentiment_rows(4))
    row = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + DEEP.encode() + b"}\n"
    err = error_of(_upload(server, h, good + row + DEEP.encode() + b"\n"), 400, "file")
    assert err["code"] == "invalid_file" and [d["line"] for d in err["details"]] == [5, 6], err
    assert f"deeper than {MAX_JSON_DEPTH}" in err["message"]
    # A row just within the limit is judged by the row rules as usual (not JSON depth).
    within = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 60 + b"]" * 60 + b"}\n"
    err = error_of(_upload(server, h, good + within), 400, "file")
    assert "deeper" not in err["message"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 5000])
def test_a_deeply_nested_tool_call_or_job_body_is_a_400(server, h, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    for path, body in [
        ("/tools/plan_finetune", '{"model": "x", "metadata": ' + deep + "}"),
        ("/fine_tuning/jobs", '{"model": "x", "task": {"output_schema": ' + deep + "}}"),
    ]:
        for ctype in ({"Content-Type": "application/json"}, {}):  # FastAPI parses both as JSON
            r = server.api.post(path, content=body, headers={**h, **ctype})
            assert error_of(r, 400, "body")["code"] == "too_deep"
    # Brackets inside strings are text, not nesting.
    r = server.api.post("/fine_tuning/jobs/plan", json={"model": "x", "suffix": "[" * 200}, headers=h)
    assert error_of(r, 400, "suffix")


def test_a_nul_or_malformed_path_id_is_a_404_naming_it(server, h) -> None:
    for path, param in [
        ("/fine_tuning/jobs/ftjob-%00abc", "fine_tuning_job_id"),
        ("/fine_tuning/jobs/ftjob-%00abc/events", "fine_tuning_job_id"),
        ("/files/file-%00", "file_id"),
        ("/files/" + "f" * (MAX_ID_LENGTH + 1), "file_id"),
        ("/artifacts/art-%01", "artifact_id"),
        ("/synthetic_datasets/sd-%00", "dataset_id"),
        ("/registry/models/m%00/versions", "name"),
        ("/registry/models/m/versions/99999999999999999999999", "version"),  # past BIGINT
    ]:
        err = error_of(server.api.get(path, headers=h), 404, param)
        assert err["type"] == "not_found_error", (path, err)
    assert error_of(
        server.api.post("/fine_tuning/jobs/ftjob-%00/cancel", headers=h), 404, "fine_tuning_job_id"
    )
    assert error_of(server.api.delete("/files/file-%00", headers=h), 404, "file_id")
    # A well-formed unknown id is the usual 404.
    assert error_of(server.api.get("/fine_tuning/jobs/ftjob-nope", headers=h), 404, "fine_tuning_job_id")


def test_a_nul_or_overlong_query_value_is_a_400_naming_it(server, h) -> None:
    for params, param in [
        ({"after": "ftjob-\x00"}, "after"),
        ({"after": "x" * 5000}, "after"),
        ({"metadata[team]": "q\x00a"}, "metadata[team]"),
    ]:
        assert error_of(server.api.get("/fine_tuning/jobs", params=params, headers=h), 400, param)
    assert error_of(server.api.get("/files", params={"after": "\x00"}, headers=h), 400, "after")
    assert error_of(server.api.get("/fine_tuning/jobs", params={"limit": 10**30}, headers=h), 400, "limit")


def test_a_nul_in_a_body_string_is_a_400_naming_the_field(server, h) -> None:
    body = {"model": "x", "metadata": {"team": "q\x00a"}}
    err = error_of(server.api.post("/fine_tuning/jobs", json=body, headers=h), 400, "metadata")
    assert "metadata.team" in err["message"]
    body = {"model": "x", "task": {"description": "Classify \x00 reviews.", "labels": ["a", "b"]}}
    error_of(server.api.post("/fine_tuning/jobs/plan", json=body, headers=h), 400, "task.description")


def test_a_model_id_no_file_system_can_hold_is_a_400_naming_the_model(server, h) -> None:
    """256 characters pass the field's length limit but no file system holds a name that long: the
    base lookup (recipes/base_models.py) says "no such model", never a 500 from the OS error."""
    body = {
        "model": "a" * MAX_MODEL_LENGTH,
        "task": {"description": "Classify the reviews.", "labels": ["a", "b"]},
    }
    for path in ("/fine_tuning/jobs/plan", "/fine_tuning/jobs"):
        err = error_of(server.api.post(path, json=body, headers=h), 400, "model")
        assert "a" * 40 in err["message"]


def test_usage_times_out_of_range_are_a_400_naming_them(server, h) -> None:
    for params, param in [
        ({"end_time": 10**20}, "end_time"),  # past BIGINT: was a 500
        ({"end_time": MAX_UNIX_TIME + 1}, "end_time"),
        ({"start_time": -1}, "start_time"),
        ({"start_time": 10**30}, "start_time"),
        ({"end_time": "soon"}, "end_time"),
    ]:
        assert error_of(server.api.get("/usage", params=params, headers=h), 400, param)
    r = server.api.get("/usage", params={"start_time": 0, "end_time": MAX_UNIX_TIME}, headers=h)
    assert r.status_code == 200, r.text


@pytest.fixture()
def stripe_on(platform) -> Iterator[None]:
    with stripe_configured(shared_standin().base_url):
        yield


def test_a_signed_webhook_that_is_not_an_event_object_is_a_400(server, stripe_on) -> None:
    for body, param in [
        (b"[1, 2]", "body"),
        (b'"invoice.paid"', "body"),
        (b"null", "body"),
        (b'{"id": "evt_1", "type": "invoice.paid", "data": [1]}', "data"),
        (b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": "in_1"}}', "data.object"),
        # found by the fuzz run (tests/api/test_fuzz.py): a non-string object id was a 500
        (b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": {}}}}', "data.object.id"),
        (b'{"id": "evt_1", "type": "customer.created", "data": {"object": {"id": [1]}}}', "data.object.id"),
        (b'{"id": ["evt_1"], "type": "invoice.paid", "data": {"object": {}}}', "id"),
        (b'{"id": "evt_1", "type": "invoice.paid", "created": "now", "data": {"object": {}}}', "created"),
        (b'{"id": "evt_1", "type": "invoice.paid", "created": 1e300, "data": {"object": {}}}', "created"),
    ]:
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body)}
        r = server.api.post("/webhooks/stripe", content=body, headers=headers)
        assert error_of(r, 400, param)["code"] == "invalid_payload", body
    deep = DEEP.encode()
    r = server.api.post("/webhooks/stripe", content=deep, headers={"Stripe-Signature": sign(deep)})
    assert error_of(r, 400, "body")["code"] == "too_deep"


# ---- the database down -----------------------------------------------------------------------


@pytest.fixture()
def db_down_server(platform) -> Iterator[tuple[str, int]]:
    """The app on a live socket, its sessions bound to a PostgreSQL URL that refuses connections
    (a free port); plus one route that fails unexpectedly, naming an internal address."""
    import uvicorn

    from api.deps import get_db
    from api.main import create_app

    dead_port = free_port()
    engine = create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{dead_port}/edgetune",
        connect_args={"connect_timeout": 2},
        pool_pre_ping=True,
    )
    factory = sessionmaker(bind=engine)

    def dead_db() -> Iterator[Session]:
        with factory() as session:
            yield session

    app = create_app()
    app.dependency_overrides[get_db] = dead_db

    @app.get("/v1/_boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("redis://10.0.0.5:6379 said no")

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", dead_port
    srv.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


def _fill(template: str) -> str:
    import re

    return re.sub(r"\{(\w+)\}", lambda m: "7" if m.group(1) == "version" else f"{m.group(1)}-x", template)


def test_every_endpoint_is_a_503_with_retry_after_while_the_database_is_down(db_down_server) -> None:
    base, dead_port = db_down_server
    spec = httpx.get(f"{base}/openapi.json").json()
    headers = {"Authorization": "Bearer et-" + "a" * 43}
    # No database behind these: the tool list is static; the webhook answers 503 on its own when
    # Stripe is not configured.
    no_db = {("get", "/v1/tools"), ("post", "/v1/webhooks/stripe")}
    checked = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for template, ops in spec["paths"].items():
            for method in ops:
                if (method, template) in no_db:
                    continue
                kwargs: dict[str, Any] = {"headers": headers}
                if template.startswith("/v1/device_agent/"):  # a device agent's own key
                    kwargs["headers"] = {"Authorization": "Bearer etagent-" + "a" * 43}
                if template == "/v1/files" and method == "post":
                    kwargs["files"] = {"file": ("t.jsonl", io.BytesIO(jsonl(sentiment_rows(2))))}
                    kwargs["data"] = {"purpose": "fine-tune"}
                elif method in ("post", "put"):
                    kwargs["json"] = {"model": "x", "version": 1}
                r = client.request(method.upper(), _fill(template), **kwargs)
                err = error_of(r, 503, None)
                assert err["type"] == "service_unavailable_error" and err["code"] == "database_unavailable"
                assert int(r.headers["Retry-After"]) > 0, (method, template)
                assert str(dead_port) not in r.text and "postgres" not in r.text.lower(), r.text
                checked += 1
    assert checked >= 25, checked


def test_an_unexpected_error_is_a_generic_500_in_the_error_shape(db_down_server) -> None:
    base, _ = db_down_server
    r = httpx.get(f"{base}/v1/_boom")
    err = error_of(r, 500, None)
    assert err["type"] == "server_error" and "10.0.0.5" not in r.text and "redis" not in r.text


def test_a_json_body_over_the_upload_cap_is_a_413(server, h, monkeypatch) -> None:
    from infra.settings import get_settings

    monkeypatch.setenv("EDGETUNE_MAX_UPLOAD_BYTES", "4096")
    get_settings.cache_clear()
    try:
        body = {"model": "x", "suffix": "s" * 5000}
        r = server.api.post("/fine_tuning/jobs", json=body, headers=h)
        assert error_of(r, 413, "body")["code"] == "body_too_large"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    r = server.api.post("/fine_tuning/jobs", json={"model": "x", "suffix": "s" * 5000}, headers=h)
    assert error_of(r, 400, "suffix")


def test_a_bad_field_inside_a_union_is_named_and_a_sent_key_is_never_dropped() -> None:
    """api/errors.py: pydantic names the union member it tried ("constrained-str", "TargetSpec")
    in an error's location; `param` leaves those out and names the field under the member the input
    was meant for, but keeps every key the customer sent, capitalised or not."""
    from api.errors import _param, _telling

    body = {"targets": [{"profile": "pi", "budgets": {"min_prefill_tokens_per_s": -1}}]}
    errors = [
        {"loc": ("body", "targets", 0, "constrained-str"), "type": "string_type"},
        {
            "loc": ("body", "targets", 0, "TargetSpec", "budgets", "min_prefill_tokens_per_s"),
            "type": "greater_than",
        },
    ]
    assert _param(_telling(errors, body)["loc"], body) == "targets.0.budgets.min_prefill_tokens_per_s"
    assert _param(("body", "method", "Supervised"), {"method": {"Supervised": {}}}) == "method.Supervised"
    assert _param(("body", "model"), {}) == "model"  # a missing field is named though not sent
    # a type error that is not a union's stays first: `model` is what to fix before `suffix`
    errors = [
        {"loc": ("body", "model"), "type": "string_type"},
        {"loc": ("body", "suffix"), "type": "too_long"},
    ]
    assert _param(_telling(errors, {"model": 5})["loc"], {"model": 5}) == "model"
