from __future__ import annotations

import io
import json

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
