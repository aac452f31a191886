from __future__ import annotations

import io
import json

import httpx
import openai
import pytest

from infra.settings import get_settings
from tests.api.helpers import chat_row, jsonl, sentiment_rows
from tests.conftest import new_key


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


def test_upload_list_retrieve_content_delete(client) -> None:
    data = jsonl(sentiment_rows(6))
    f = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert f.id.startswith("file-") and f.bytes == len(data) and f.purpose == "fine-tune"
    assert f.model_extra and f.model_extra["row_count"] == 6
    assert client.files.retrieve(f.id).filename == "train.jsonl"
    assert f.id in [x.id for x in client.files.list()]
    assert client.files.content(f.id).read() == data
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_every_bad_row_is_reported_with_its_line(client, server, api_key) -> None:
    good = chat_row("hi", "hello")
    rows = [
        good,
        "{not json",
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x" * 70000}, {"role": "assistant", "content": "y"}]},
        good,
    ]
    before = len(client.files.list().data)
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("bad.jsonl", io.BytesIO(jsonl(rows))), purpose="fine-tune")
    err = exc.value.body
    assert isinstance(err, dict) and err["param"] == "file"
    details = {d["line"]: d["reason"] for d in err["details"]}
    assert set(details) == {2, 3, 4, 5, 6}
    assert "bad JSON" in details[2] and "assistant" in details[3] and "wizard" in details[4]
    assert "empty" in details[5] and "limit" in details[6]
    assert len(client.files.list().data) == before  # rejected whole: nothing stored


def test_empty_wrong_purpose_and_oversized_uploads(client, monkeypatch) -> None:
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.files.create(file=("e.jsonl", io.BytesIO(b"\n")), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(2)))), purpose="batch")
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100)
    with pytest.raises(openai.APIStatusError) as exc:
        client.files.create(file=("big.jsonl", io.BytesIO(jsonl(sentiment_rows(5)))), purpose="fine-tune")
    assert exc.value.status_code == 413


def test_tool_call_rows_are_accepted_and_bad_arguments_rejected(client) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Boston"}'},
    }
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Boston?"},
            {"role": "assistant", "tool_calls": [call]},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
    }
    assert client.files.create(file=("t.jsonl", io.BytesIO(jsonl([row]))), purpose="fine-tune").id
    bad = json.loads(json.dumps(row))
    bad["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{oops"
    with pytest.raises(openai.BadRequestError, match="line 1"):
        client.files.create(file=("t.jsonl", io.BytesIO(jsonl([bad]))), purpose="fine-tune")


def test_another_orgs_file_is_404(client, server) -> None:
    f = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(2)))), purpose="fine-tune")
    other = openai.OpenAI(base_url=server.base_url, api_key=new_key(), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(f.id)
    assert f.id not in [x.id for x in other.files.list()]


def _multipart(boundary: str, body: bytes) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode()


def test_a_body_over_the_cap_is_refused_while_it_arrives(client, server, api_key, monkeypatch) -> None:
    """The cap (plus 64 KB of multipart slack) holds before the route runs: a declared length over
    it is refused unread, and a chunked body (no length) is cut off once it passes it."""
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1000)
    body = _multipart("cap", jsonl(sentiment_rows(2000)))  # ~200 KB
    assert len(body) > 1000 + 64 * 1024
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=cap"}
    before = len(client.files.list().data)
    declared = httpx.post(f"{server.base_url}/files", content=body, headers=headers, timeout=30)
    chunked = httpx.post(
        f"{server.base_url}/files",
        content=(body[i : i + 8192] for i in range(0, len(body), 8192)),  # a generator: chunked
        headers=headers,
        timeout=30,
    )
    for r in (declared, chunked):
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("file_too_large", "file")
        assert "over the 1000-byte limit" in error["message"]
    assert len(client.files.list().data) == before  # nothing stored
    # within the slack but over the cap: the copy refuses it, naming the file's limit
    small = _multipart("cap", jsonl(sentiment_rows(20)))
    r = httpx.post(f"{server.base_url}/files", content=small, headers=headers, timeout=30)
    assert r.status_code == 413 and "1000-byte limit" in r.json()["error"]["message"]


def test_a_huge_line_is_reported_without_being_held_and_the_next_lines_still_checked(client) -> None:
    """Lines are read at most a row's size at a time: a 3 MB line is one error with its length,
    and the line numbers after it stay right."""
    good = jsonl([chat_row("hi", "hello")])
    data = good + b'{"messages": "' + b"x" * (3 * 1024 * 1024) + b'"}\n' + b"{oops\n" + good
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune")
    details = {d["line"]: d["reason"] for d in exc.value.body["details"]}
    assert set(details) == {2, 3}
    assert details[2] == f"row is {3 * 1024 * 1024 + 16} bytes, over the 65536-byte limit"
    assert "bad JSON" in details[3]
    ok = client.files.create(file=("t.jsonl", io.BytesIO(good * 3)), purpose="fine-tune")
    content = client.files.with_raw_response.content(ok.id)
    assert content.headers["x-edgetune-sha256"] == ok.model_extra["sha256"]
    assert content.http_response.content == good * 3
