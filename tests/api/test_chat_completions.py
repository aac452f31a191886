"""POST /v1/chat/completions over the live API with the official `openai` SDK: a fine-tune published
by the real gate and publish steps (PostgreSQL, moto S3) whose GGUF is the bundled SmolLM2-135M
Q4_1, answered by llama.cpp. A 135M model's words are not asserted, only shapes, parses and bounds.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from eval.grammar import grammar_for
from infra.price_book import price_book
from infra.settings import get_settings
from services.errors import EvalGateFailed
from services.model_cache import ModelCache
from synth.llama_server import bundled_teacher_gguf
from tests.conftest import new_key
from tests.support.ledger import org_of, rows_of
from tests.worker.test_registry_publish import exported_job

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
ASK = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}


def _publish(root: Path, org_id: str, suffix: str, *, grammar: str | None = None, gate: Any = None) -> str:
    """A job through the real gate and publish steps, its one GGUF target the bundled SmolLM2."""
    from worker.stages.gate import gate as run_gate
    from worker.stages.publish import publish

    ctx = exported_job(root, org_id, suffix=suffix, gate=gate)
    entry = ctx.state["exported"]["laptop-cpu"]
    ctx.state["exported"] = {"laptop-cpu": entry}
    if gate is None:  # a refused job's file is never served: its random bytes do
        shutil.copyfile(bundled_teacher_gguf(), entry["files"][0])
    path = Path(entry["files"][0])
    if grammar is not None:
        (path.parent / "answer.gbnf").write_text(grammar)
        entry["grammar"] = str(path.parent / "answer.gbnf")
    if gate is not None:  # a refused job: its artifacts are stored as rejected
        with pytest.raises(EvalGateFailed):
            run_gate(ctx)
        return ctx.job_id
    ctx.state.update(run_gate(ctx))
    ctx.state.update(publish(ctx))
    return ctx.job_id


@pytest.fixture(scope="module")
def org(platform, server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An org whose model `support-router` has version 1 refused by its gate and version 2 passed
    (alias `prod`), and a labels fine-tune `sentiment` that ships its grammar."""
    from infra.db import session_scope
    from infra.models import Job

    key = new_key()
    org_id, root = org_of(key), tmp_path_factory.mktemp("chat")
    refused = _publish(root, org_id, "support-router", gate={"min_score": 0.9})
    passed = _publish(root, org_id, "support-router")
    labels = grammar_for("classification", ["positive", "negative"], None, None)
    sentiment = _publish(root, org_id, "sentiment", grammar=labels)
    headers = {"Authorization": f"Bearer {key}"}
    alias = server.api.put(
        "/registry/models/support-router/aliases/prod", json={"version": 2}, headers=headers
    )
    assert alias.status_code == 200, alias.text
    with session_scope() as session:
        names = {j: session.get_one(Job, j).fine_tuned_model for j in (passed, sentiment)}
    return {
        "key": key,
        "org_id": org_id,
        "refused": refused,
        "job": passed,
        "model": names[passed],
        "sentiment": names[sentiment],
    }


def _client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=300)


def _post(server, key: str, body: dict[str, Any]) -> httpx.Response:
    return server.api.post("/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_the_sdk_gets_a_completion_from_the_fine_tunes_gguf(server, org) -> None:
    out = _client(server, org["key"]).chat.completions.create(model=org["model"], messages=ASK, max_tokens=24)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-") and out.model == org["model"]
    (choice,) = out.choices
    assert choice.message.role == "assistant" and choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert out.usage is not None and out.usage.prompt_tokens > 5 and 0 < out.usage.completion_tokens <= 25
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_a_stream_concatenates_to_a_message_and_ends_with_usage(server, org) -> None:
    chunks = list(
        _client(server, org["key"]).chat.completions.create(
            model=org["model"],
            messages=ASK,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() and finishes in (["stop"], ["length"])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 5 and 0 < last.usage.completion_tokens <= 25


def test_tools_answer_a_parsed_tool_call_or_content(server, org) -> None:
    client = _client(server, org["key"])
    weather = [{"role": "user", "content": "What is the weather in Paris today? Use the tool."}]
    auto = client.chat.completions.create(
        model=org["model"], messages=weather, tools=[WEATHER], max_tokens=48
    )
    message = auto.choices[0].message
    if message.tool_calls:  # whether a 135M model calls the tool is its choice; the shape is not
        assert auto.choices[0].finish_reason == "tool_calls" and message.content is None
        assert all(c.function.name == "get_weather" for c in message.tool_calls)
        assert all(isinstance(json.loads(c.function.arguments), dict) for c in message.tool_calls)
    else:
        assert isinstance(message.content, str) and auto.choices[0].finish_reason in ("stop", "length")

    forced = client.chat.completions.create(
        model=org["model"],
        messages=weather,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
    )
    (call,) = forced.choices[0].message.tool_calls or []
    assert forced.choices[0].finish_reason == "tool_calls" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)  # the schema's grammar: valid JSON, `city` given
    assert call.function.name == "get_weather" and isinstance(arguments["city"], str)

    streamed = list(
        client.chat.completions.create(
            model=org["model"],
            messages=weather,
            tools=[WEATHER],
            max_tokens=48,
            stream=True,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    )
    deltas = [tc for c in streamed for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["get_weather"] and json.loads(deltas[0].function.arguments)


def test_registry_names_resolve_and_a_refused_version_is_not_served(server, org) -> None:
    client = _client(server, org["key"])
    for name in ("support-router@prod", "support-router:2", org["job"]):
        out = client.chat.completions.create(model=name, messages=ASK, max_tokens=4)
        assert out.model == org["model"] and out.usage is not None and out.usage.completion_tokens >= 1
    refused = _post(server, org["key"], {"model": "support-router:1", "messages": ASK})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_failed_gate"
    assert "eval gate" in refused.json()["error"]["message"]
    pending = _post(server, org["key"], {"model": org["refused"], "messages": ASK})
    assert pending.status_code == 400 and pending.json()["error"]["code"] == "model_not_ready"


def test_another_orgs_model_is_not_found_exactly_as_a_missing_one(server, org) -> None:
    other = new_key()
    with pytest.raises(openai.NotFoundError) as theirs:
        _client(server, other).chat.completions.create(model=org["model"], messages=ASK)
    for name in (org["model"], "support-router@prod", org["job"]):
        mine = _post(server, other, {"model": name, "messages": ASK})
        assert mine.status_code == 404, mine.text
        error = mine.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (
            "model_not_found",
            "model",
            "not_found_error",
        )
    # the same words as for a name that exists nowhere: nothing says the other org has it
    theirs_message = _post(server, other, {"model": org["model"], "messages": ASK}).json()["error"]["message"]
    missing = _post(server, org["key"], {"model": "ft:nothing:here", "messages": ASK}).json()["error"][
        "message"
    ]
    assert theirs.value.code == "model_not_found"
    assert theirs_message == missing.replace("ft:nothing:here", org["model"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]},
            "tool_choice",
        ),
        ({"target": "raspberry-pi-5"}, "target"),
    ],
)
def test_bad_fields_are_a_400_naming_the_field(server, org, body: dict[str, Any], param: str) -> None:
    request = {"model": org["model"], "messages": ASK, **body}
    if request["messages"] is None:
        del request["messages"]
    r = _post(server, org["key"], request)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_a_stream_refused_before_it_starts_is_an_http_error(server, org) -> None:
    for body, param in (
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": "word " * 5000}]}, "messages"),
    ):
        r = _post(server, org["key"], {"model": org["model"], "messages": ASK, "stream": True, **body})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["error"]["param"] == param


def test_an_artifacts_grammar_holds_unless_the_request_asks_otherwise(server, org) -> None:
    client = _client(server, org["key"])
    review = [{"role": "user", "content": "Review: the battery died after a day. Sentiment?"}]
    labelled = client.chat.completions.create(model=org["sentiment"], messages=review, max_tokens=8)
    assert labelled.choices[0].message.content in ("positive", "negative")
    as_json = client.chat.completions.create(
        model=org["sentiment"], messages=review, max_tokens=32, response_format={"type": "json_object"}
    )
    answer = as_json.choices[0].message.content or ""
    assert answer.lstrip().startswith("{")  # JSON's grammar, not the labels'
    if as_json.choices[0].finish_reason == "stop":  # a whole answer parses; one cut short cannot
        json.loads(answer)
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["good", "bad"]}},
        "required": ["label"],
    }
    structured = client.chat.completions.create(
        model=org["sentiment"],
        messages=review,
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
    )
    assert json.loads(structured.choices[0].message.content or "")["label"] in ("good", "bad")
    free = client.chat.completions.create(
        model=org["sentiment"], messages=review, max_tokens=8, response_format={"type": "text"}
    )
    assert isinstance(free.choices[0].message.content, str)


def test_tokens_are_metered_in_the_usage_ledger(server, org) -> None:
    before = len(rows_of(org["org_id"]))
    out = _client(server, org["key"]).chat.completions.create(model=org["model"], messages=ASK, max_tokens=8)
    assert out.usage is not None
    rows = rows_of(org["org_id"])[before:]
    rates = price_book().inference_1m_tokens
    assert sorted((r.stage, r.unit, r.job_id, r.unit_price_usd) for r in rows) == [
        ("inference", "input_1m_tokens", org["job"], rates.input),
        ("inference", "output_1m_tokens", org["job"], rates.output),
    ]
    by_unit = {r.unit: r for r in rows}
    assert by_unit["input_1m_tokens"].quantity * 1e6 == pytest.approx(out.usage.prompt_tokens)
    assert by_unit["output_1m_tokens"].quantity * 1e6 == pytest.approx(out.usage.completion_tokens)
    assert all(r.idempotency_key.startswith(out.id) for r in rows)
    usage = server.api.get(
        "/usage", params={"group_by": "job"}, headers={"Authorization": f"Bearer {org['key']}"}
    ).json()
    bucket = next(b for b in usage["data"] if b["job_id"] == org["job"])
    assert {r["unit"] for r in bucket["results"] if r["stage"] == "inference"} == {
        "input_1m_tokens",
        "output_1m_tokens",
    }


def test_a_spent_budget_is_a_402(server, org) -> None:
    from infra.db import session_scope
    from infra.models import Org

    key = new_key()
    with session_scope() as session:
        session.get_one(Org, org_of(key)).budget_usd = 0.0
    r = _post(server, key, {"model": SMOLLM2, "messages": ASK})
    assert r.status_code == 402 and r.json()["error"]["code"] == "org_budget_exceeded"


def test_a_base_model_answers_from_its_gguf_or_its_converted_checkpoint(server, org, tiny_base) -> None:
    out = _client(server, org["key"]).chat.completions.create(model=SMOLLM2, messages=ASK, max_tokens=8)
    assert out.model == SMOLLM2 and out.usage is not None and out.usage.completion_tokens >= 1
    base_rows = [r for r in rows_of(org["org_id"]) if r.idempotency_key.startswith(out.id)]
    assert base_rows and all(r.job_id is None for r in base_rows)
    # an LFM2 base held as a checkpoint: converted to a Q8_0 GGUF once, then answered from it
    converted = _client(server, org["key"]).chat.completions.create(
        model=tiny_base, messages=ASK, max_tokens=4
    )
    assert (
        converted.model == tiny_base
        and converted.usage is not None
        and converted.usage.completion_tokens >= 1
    )
    files = list((get_settings().var_dir.resolve() / "inference" / "bases").glob("*-q8_0.gguf"))
    assert len(files) == 1 and files[0].read_bytes()[:4] == b"GGUF"
    written = files[0].stat().st_mtime_ns
    again = _client(server, org["key"]).chat.completions.create(model=tiny_base, messages=ASK, max_tokens=4)
    assert again.model == tiny_base and again.usage is not None
    assert files[0].stat().st_mtime_ns == written  # read again, not converted a second time
    absent = _post(server, org["key"], {"model": "LiquidAI/LFM2-350M", "messages": ASK})
    assert absent.status_code == 404 and absent.json()["error"]["code"] == "model_not_found"


def test_a_client_that_leaves_stops_generation_and_frees_the_model(server, org) -> None:
    before = len(rows_of(org["org_id"]))
    story = [
        {"role": "user", "content": "Write a very long story about a lighthouse keeper, in ten chapters."}
    ]
    body = {
        "model": org["model"],
        "messages": story,
        "max_tokens": 400,
        "stream": True,
        "temperature": 0.8,
        "seed": 1,
    }
    headers = {"Authorization": f"Bearer {org['key']}"}
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=60
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames: list[str] = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(line)
            if len(frames) == 3:
                break
    # the server notices the closed connection, closes the generator and bills what it made
    deadline = time.monotonic() + 30
    while len(rows_of(org["org_id"])) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    out_rows = [r for r in rows_of(org["org_id"])[before:] if r.unit == "output_1m_tokens"]
    assert len(out_rows) == 1 and 0 < out_rows[0].quantity * 1e6 < 400
    # the model's lock was let go: the next request is answered
    again = _client(server, org["key"]).chat.completions.create(
        model=org["model"], messages=ASK, max_tokens=4
    )
    assert again.usage is not None and again.usage.completion_tokens >= 1


def test_a_client_that_leaves_a_whole_completion_stops_it_too(server, org) -> None:
    client = _client(server, org["key"])
    client.chat.completions.create(
        model=org["model"], messages=ASK, max_tokens=1
    )  # loaded: it starts at once
    before = len(rows_of(org["org_id"]))
    story = [
        {"role": "user", "content": "Write a very long story about a lighthouse keeper, in ten chapters."}
    ]
    body = {"model": org["model"], "messages": story, "max_tokens": 400, "temperature": 0.8, "seed": 2}
    headers = {"Authorization": f"Bearer {org['key']}"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(
            f"{server.base_url}/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(60, read=3),
        )
    deadline = time.monotonic() + 60
    while len(rows_of(org["org_id"])) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = rows_of(org["org_id"])[before:]
    assert [r.unit for r in rows if r.unit == "input_1m_tokens"] == ["input_1m_tokens"]
    assert sum(r.quantity for r in rows if r.unit == "output_1m_tokens") * 1e6 < 400


# --- the loaded-model cache ---------------------------------------------------------------------


class _Loaded:
    def __init__(self, path: Path) -> None:
        self.path, self.closed = path, False

    def close(self) -> None:
        self.closed = True


def _files(tmp_path: Path, sizes: dict[str, int]) -> dict[str, Path]:
    paths = {}
    for name, size in sizes.items():
        paths[name] = tmp_path / f"{name}.gguf"
        paths[name].write_bytes(b"\0" * size)
    return paths


def test_the_cache_evicts_the_least_recently_used_model_past_its_budget(tmp_path: Path) -> None:
    files = _files(tmp_path, {"a": 400, "b": 400, "c": 400})
    loads: list[str] = []
    loaded: dict[str, _Loaded] = {}

    def load(path: Path, n_ctx: int) -> _Loaded:
        loads.append(path.stem)
        loaded[path.stem] = _Loaded(path)
        return loaded[path.stem]

    cache = ModelCache(budget_bytes=1000, loader=load)
    for name in ("a", "b", "a"):  # `a` used last: `b` is the least recently used
        with cache.use(name, files[name], 512) as model:
            assert model.path == files[name]
    with cache.use("c", files["c"], 512):
        pass
    assert cache.keys() == ["a", "c"] and cache.loaded_bytes() == 800
    assert loads == ["a", "b", "c"] and loaded["b"].closed and not loaded["a"].closed

    # a model in use when it is evicted is not closed under its request; it is dropped all the same
    with cache.use("a", files["a"], 512) as busy:
        tiny = ModelCache(budget_bytes=0, loader=load)
        with tiny.use("a", files["a"], 512):
            pass
        assert tiny.keys() == ["a"]  # one model larger than the budget is still served, alone
        started = threading.Event()

        def other() -> None:
            with cache.use("b", files["b"], 512), cache.use("c", files["c"], 512):
                started.set()

        worker = threading.Thread(target=other)
        worker.start()
        worker.join(timeout=10)
        assert started.is_set() and "a" not in cache.keys() and not busy.closed
    assert loads[-2:] == ["b", "c"] and cache.keys() == ["b", "c"] and cache.loaded_bytes() == 800


def test_one_model_serves_one_request_at_a_time(tmp_path: Path) -> None:
    files = _files(tmp_path, {"a": 10})
    cache = ModelCache(budget_bytes=100, loader=lambda path, n_ctx: _Loaded(path))
    inside, overlaps = [0], []

    def use() -> None:
        with cache.use("a", files["a"], 512):
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1, 1, 1, 1]
