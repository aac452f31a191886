from __future__ import annotations

import io
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from starlette.requests import Request

import api.multipart_upload as mp
from infra.settings import get_settings
from services.errors import InvalidRequest, PayloadTooLarge
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


# ---- the multipart body, parsed off the event loop (api/multipart_upload.py) -------------------


def _part(boundary: str, name: str, value: bytes, filename: str | None = None) -> bytes:
    fn = f'; filename="{filename}"' if filename else ""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{fn}\r\n\r\n'
    return head.encode() + value + b"\r\n"


def _form(*parts: bytes, boundary: str = "b0") -> bytes:
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _request(chunks: list[bytes], ctype: str = "multipart/form-data; boundary=b0") -> Request:
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}
    return Request(scope, receive)  # type: ignore[arg-type]


def _parse(tmp_path: Path, body: bytes) -> mp.Upload:
    """The route's parse of `body`, received in 1000-byte chunks."""
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    return anyio.run(mp.receive_upload, _request(chunks), tmp_path)


def test_the_parser_keeps_the_fields_and_writes_the_file_part_to_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mp, "FEED_BYTES", 7)  # boundaries and headers split across the parser's batches
    data = jsonl(sentiment_rows(30)) + b"--b0 without a CRLF before it is data\r\n"
    body = _form(_part("b0", "purpose", b"fine-tune"), _part("b0", "file", data, "t.jsonl"))
    upload = _parse(tmp_path, body)
    assert upload.fields == {"purpose": "fine-tune"} and upload.filename == "t.jsonl"
    assert upload.required_file().read_bytes() == data and upload.required("purpose") == "fine-tune"
    with pytest.raises(InvalidRequest) as exc:
        _parse(tmp_path, _form(_part("b0", "purpose", b"fine-tune"))).required_file()
    assert (exc.value.param, exc.value.message) == ("file", "file: Field required")
    with pytest.raises(InvalidRequest) as exc:
        _parse(tmp_path, _form(_part("b0", "file", data, "t.jsonl"))).required("purpose")
    assert exc.value.param == "purpose"


TWO_FILES = _form(_part("b0", "file", b"a", "a.jsonl"), _part("b0", "file", b"b", "b.jsonl"))


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (_part("b0", "purpose", b"x") + _part("b0", "file", b"{}", "t.jsonl"), "file", "invalid_multipart"),
        (b"garbage", "file", "invalid_multipart"),
        (TWO_FILES, "file", "invalid_multipart"),
        (_form(_part("b0", "purpose", b"x" * (mp.FIELDS_MAX_BYTES + 1))), "purpose", "field_too_large"),
        (_form(*(_part("b0", f"f{i}", b"x" * 1024) for i in range(70))), "f63", "field_too_large"),
    ],
    ids=["no closing boundary", "not multipart", "two files", "a huge field", "many fields"],
)
def test_a_malformed_or_oversized_form_is_a_400(tmp_path, body: bytes, param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        _parse(tmp_path, body)
    assert (exc.value.param, exc.value.code) == (param, code)


def test_the_route_counts_the_body_itself_and_always_removes_its_files(monkeypatch) -> None:
    """Over the cap (plus the multipart slack) while receiving: a 413 naming the file; the upload's
    temporary directory is gone afterwards, whether it ended well or not."""
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 10)
    seen: list[Path] = []

    async def receive(chunks: list[bytes], ctype: str = "multipart/form-data; boundary=b0") -> mp.Upload:
        async with mp.upload_dir() as tmp:
            seen.append(tmp)
            return await mp.receive_upload(_request(chunks, ctype), tmp)

    with pytest.raises(PayloadTooLarge) as too_large:
        anyio.run(receive, [b"x" * 40 * 1024] * 2)
    assert too_large.value.code == "file_too_large" and too_large.value.param == "file"
    with pytest.raises(InvalidRequest, match="multipart/form-data"):
        anyio.run(receive, [b"{}"], "application/json")
    form = _form(_part("b0", "purpose", b"fine-tune"), _part("b0", "file", b"1", "a.jsonl"))
    upload = anyio.run(receive, [form])
    assert upload.fields == {"purpose": "fine-tune"}
    assert len(seen) == 3 and not any(p.exists() for p in seen)


def test_a_request_is_answered_while_an_upload_is_being_parsed(client, server, api_key, monkeypatch) -> None:
    """The parse is held in its worker thread until another org's request has been answered: were
    it on the event loop, that request could not be answered and the wait would time out."""
    parsing, answered = threading.Event(), threading.Event()
    feed = mp.feed

    def held_feed(*args: object) -> None:
        parsing.set()
        assert answered.wait(30), "the concurrent request was not answered while parsing"
        feed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(mp, "feed", held_feed)
    data = jsonl(sentiment_rows(200))
    result: dict[str, object] = {}

    def post() -> None:
        result["f"] = client.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune")

    upload = threading.Thread(target=post)
    upload.start()
    try:
        assert parsing.wait(30), "the upload never reached the parser"
        other = openai.OpenAI(base_url=server.base_url, api_key=new_key(), max_retries=0, timeout=20)
        assert other.files.list().data == []  # answered while the parse is held
    finally:
        answered.set()
        upload.join(60)
    assert result["f"].bytes == len(data)  # type: ignore[attr-defined]


def test_an_upload_leaves_no_temporary_file_however_it_ends(
    client, server, api_key, monkeypatch, tmp_path
) -> None:
    """Stored, refused (bad rows, over the cap), or the client gone mid-body: nothing is left in the
    temporary directory and nothing is stored but the good file."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "multipart/form-data; boundary=b0"}
    url = f"{server.base_url}/files"
    before = len(client.files.list().data)
    purpose = _part("b0", "purpose", b"fine-tune")
    good = _form(purpose, _part("b0", "file", jsonl(sentiment_rows(4)), "t.jsonl"))
    bad = _form(purpose, _part("b0", "file", b"{oops\n", "t.jsonl"))
    assert httpx.post(url, content=good, headers=headers, timeout=30).status_code == 200
    assert httpx.post(url, content=bad, headers=headers, timeout=30).status_code == 400

    def leaves_midway() -> Iterator[bytes]:
        yield good[:1000]
        time.sleep(0.3)  # the server has started spooling
        raise RuntimeError("the client goes away")

    with pytest.raises((RuntimeError, httpx.HTTPError)):
        httpx.post(url, content=leaves_midway(), headers=headers, timeout=30)
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1000)  # cut off by InputGuard mid-body
    big = _form(purpose, _part("b0", "file", jsonl(sentiment_rows(2000)), "t.jsonl"))
    chunked = (big[i : i + 8192] for i in range(0, len(big), 8192))
    assert httpx.post(url, content=chunked, headers=headers, timeout=30).status_code == 413
    deadline = time.monotonic() + 15  # the disconnect is noticed by the server on its own time
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []
    assert len(client.files.list().data) == before + 1


def test_the_spec_still_describes_the_multipart_form(server) -> None:
    spec = httpx.get(server.base_url.removesuffix("/v1") + "/openapi.json").json()
    body = spec["paths"]["/v1/files"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] and schema["required"] == ["file", "purpose"]
    assert schema["properties"]["file"]["format"] == "binary"
    assert schema["properties"]["purpose"]["type"] == "string"


def test_missing_parts_and_a_bad_content_type_are_400s_naming_the_field(server, api_key) -> None:
    h = {"Authorization": f"Bearer {api_key}"}
    url = f"{server.base_url}/files"
    no_boundary = {**h, "Content-Type": "multipart/form-data"}
    long_boundary = {**h, "Content-Type": "multipart/form-data; boundary=" + "b" * 300}
    for kwargs, param, code in [
        ({"data": {"purpose": "fine-tune"}, "files": {"other": ("x.txt", b"1")}}, "file", "invalid_value"),
        ({"files": {"file": ("t.jsonl", jsonl(sentiment_rows(2)))}}, "purpose", "invalid_value"),
        ({"json": {"purpose": "fine-tune"}}, "file", "invalid_content_type"),
        ({"content": b"x", "headers": no_boundary}, "file", "invalid_content_type"),
        ({"content": b"x", "headers": long_boundary}, "file", "invalid_multipart"),
    ]:
        r = httpx.post(url, headers=kwargs.pop("headers", h), timeout=30, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 400, r.text
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code), r.text
