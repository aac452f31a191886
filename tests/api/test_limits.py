"""Fairness between orgs (services/limits.py) and plans cached per file (token_counts.py),
on the live server with PostgreSQL and its counters in the test Redis."""

from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy import func, select

from infra.db import session_scope
from infra.models import FileTokenCount, Org
from infra.settings import get_settings
from services import limits
from tests.api.helpers import jsonl, preference_rows, sentiment_rows
from tests.conftest import new_key


def _api(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _org_of(key: str) -> Org:
    from services.api_keys import authenticate

    with session_scope() as session:
        org = authenticate(session=session, authorization=f"Bearer {key}")
        session.expunge(org)
        return org


def _upload(api: httpx.Client, rows: list) -> str:
    files = {"file": ("t.jsonl", jsonl(rows), "application/jsonl")}
    r = api.post("/files", files=files, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _assert_429(r: httpx.Response, code: str) -> None:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["type"] == "requests" and err["message"]
    assert int(r.headers["Retry-After"]) >= 1


def test_an_org_over_its_request_rate_gets_429_and_another_org_does_not(server, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "rate_limit", "3/minute")
    noisy, quiet = _api(server, new_key()), _api(server, new_key())
    assert [noisy.get("/files").status_code for _ in range(3)] == [200, 200, 200]
    r = noisy.get("/files")
    _assert_429(r, "rate_limit_exceeded")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert quiet.get("/files").status_code == 200  # counted per org


def test_the_openai_sdk_sees_a_rate_limit_error(server, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "rate_limit", "1/minute")
    client = openai.OpenAI(base_url=server.base_url, api_key=new_key(), max_retries=0)
    client.files.list()
    with pytest.raises(openai.RateLimitError) as info:
        client.files.list()
    assert info.value.code == "rate_limit_exceeded"


def test_heavy_calls_past_the_concurrency_cap_wait_for_a_slot(server, tiny_base, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_concurrent_heavy", 1)
    key = new_key()
    api = _api(server, key)
    body = {"model": tiny_base, "training_file": _upload(api, sentiment_rows(40))}
    with limits.heavy_slot(_org_of(key)):  # another request of this org holds the only slot
        _assert_429(api.post("/fine_tuning/jobs/plan", json=body), "too_many_concurrent_requests")
        tool = api.post("/tools/plan_finetune", json=body)  # the agent tools share the cap
        _assert_429(tool, "too_many_concurrent_requests")
        assert api.get("/files").status_code == 200  # light calls are not held back
        other = _api(server, new_key())  # nor other orgs' heavy calls
        other_body = {**body, "training_file": _upload(other, sentiment_rows(40))}
        assert other.post("/fine_tuning/jobs/plan", json=other_body).status_code == 200
    assert api.post("/fine_tuning/jobs/plan", json=body).status_code == 200  # released


def test_an_upload_takes_a_heavy_slot(server, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_concurrent_heavy", 1)
    key = new_key()
    api = _api(server, key)
    files = {"file": ("t.jsonl", jsonl(sentiment_rows(4)), "application/jsonl")}
    with limits.heavy_slot(_org_of(key)):
        r = api.post("/files", files=files, data={"purpose": "fine-tune"})
        _assert_429(r, "too_many_concurrent_requests")
        assert api.get("/files").json()["data"] == []  # refused before a byte was stored
    assert api.post("/files", files=files, data={"purpose": "fine-tune"}).status_code == 200


def test_heavy_rate_is_counted_apart_from_reads(server, tiny_base, monkeypatch) -> None:
    api = _api(server, new_key())
    body = {"model": tiny_base, "training_file": _upload(api, sentiment_rows(40))}
    # a window is kept per limit: the upload counted under the default, not under this one
    monkeypatch.setattr(get_settings(), "heavy_rate_limit", "2/minute")
    assert [api.post("/fine_tuning/jobs/plan", json=body).status_code for _ in range(2)] == [200, 200]
    _assert_429(api.post("/fine_tuning/jobs/plan", json=body), "rate_limit_exceeded")
    assert api.get("/files").status_code == 200


def test_creates_past_the_active_jobs_cap_get_429_but_replays_pass(server, tiny_base, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "max_active_jobs", 1)
    api = _api(server, new_key())
    body = {"model": tiny_base, "training_file": _upload(api, sentiment_rows(40))}
    first = api.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 200 and first.json()["status"] == "queued", first.text  # no worker: stays
    second = api.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k2"})
    _assert_429(second, "too_many_active_jobs")
    replay = api.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    task = {"task": {"type": "classification", "description": "Sort reviews.", "labels": ["a", "b"]}}
    _assert_429(api.post("/synthetic_datasets", json=task), "too_many_active_jobs")
    assert api.post(f"/fine_tuning/jobs/{first.json()['id']}/cancel").status_code == 200
    third = api.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k3"})
    assert third.status_code == 200, third.text


def _token_rows(file_id: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(FileTokenCount.file_id == file_id)) or 0)


def test_a_plan_tokenizes_a_file_once_per_base_and_method(server, tiny_base, monkeypatch) -> None:
    import services.token_counts as token_counts

    calls: list[int] = []
    real = token_counts.count_tokens

    def counting(model_dir, rows, max_length):  # the server runs in this process
        calls.append(len(rows))
        return real(model_dir, rows, max_length)

    monkeypatch.setattr(token_counts, "count_tokens", counting)
    api = _api(server, new_key())
    file_id = _upload(api, sentiment_rows(48))
    body = {"model": tiny_base, "training_file": file_id}
    plans = [api.post("/fine_tuning/jobs/plan", json=body).json() for _ in range(3)]
    assert calls == [48], calls  # the first plan counted; the others read the stored counts
    assert plans[0]["tokens"] == plans[1]["tokens"] == plans[2]["tokens"]
    assert _token_rows(file_id) == 1
    created = api.post("/fine_tuning/jobs", json=body)  # a create plans too, from the cache
    assert created.status_code == 200 and calls == [48]

    dpo = {"model": tiny_base, "training_file": file_id, "method": {"type": "dpo"}}
    r = api.post("/fine_tuning/jobs/plan", json=dpo)  # chat rows are not preference pairs
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_file_format"
    assert _token_rows(file_id) == 1  # a refusal is not cached: it is refused every time
    pairs = _upload(api, preference_rows(48))
    dpo["training_file"] = pairs
    first, again = (api.post("/fine_tuning/jobs/plan", json=dpo).json() for _ in range(2))
    assert calls == [48, 96] and first["tokens"] == again["tokens"]  # two sequences a pair
    assert first["tokens"]["train_rows"] + first["tokens"]["eval_rows"] == 48


def test_a_cached_count_is_not_readable_by_another_org(server, tiny_base) -> None:
    owner = _api(server, new_key())
    file_id = _upload(owner, sentiment_rows(40))
    body = {"model": tiny_base, "training_file": file_id}
    assert owner.post("/fine_tuning/jobs/plan", json=body).status_code == 200
    stranger = _api(server, new_key()).post("/fine_tuning/jobs/plan", json=body)
    assert stranger.status_code == 400 and stranger.json()["error"]["code"] == "file_not_found"
    assert owner.delete(f"/files/{file_id}").status_code == 200
    assert _token_rows(file_id) == 0  # deleted with its file


def test_the_limits_fail_open_when_their_store_is_down(server, tiny_base, monkeypatch) -> None:
    """A Redis outage must not turn every call into an error (the queue answers its own 503)."""
    api = _api(server, new_key())
    body = {"model": tiny_base, "training_file": _upload(api, sentiment_rows(40))}
    monkeypatch.setattr(get_settings(), "rate_limit_storage", "redis://127.0.0.1:1/0")  # refused
    monkeypatch.setattr(get_settings(), "rate_limit", "1/minute")
    assert [api.get("/files").status_code for _ in range(3)] == [200, 200, 200]  # not counted
    assert api.post("/fine_tuning/jobs/plan", json=body).status_code == 200
