"""`GET /v1/tools` (OpenAI function schemas from the tools' pydantic models) and `POST
/v1/tools/{name}` (a call by name), against the live API."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import jsonschema
import pytest
from openai.types.chat import ChatCompletionFunctionTool
from openai.types.responses import FunctionTool
from openai.types.shared import FunctionDefinition

from tests.api.helpers import sentiment_rows
from tests.conftest import new_key
from tests.support.artifacts import cancelled_job, seed_artifact
from tests.support.mcp_client import http_client, mcp_url, ok


@pytest.fixture()
def api(server, api_key) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


def test_tool_schemas_are_openai_function_schemas(server) -> None:
    chat = httpx.get(f"{server.base_url}/tools").json()["data"]  # listing needs no key, like /docs
    assert {t["function"]["name"] for t in chat} >= {"plan_finetune", "create_finetune_job", "get_job"}
    for tool in chat:
        parsed = ChatCompletionFunctionTool.model_validate(tool)
        assert set(tool) <= set(ChatCompletionFunctionTool.model_fields)  # nothing the SDK would drop
        assert set(tool["function"]) <= set(FunctionDefinition.model_fields)
        params = tool["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert params["type"] == "object" and not _refs(params)  # inlined: no $ref for weak clients
        assert parsed.function.description and len(parsed.function.name) <= 64

    flat = httpx.get(f"{server.base_url}/tools", params={"shape": "responses"}).json()["data"]
    for tool in flat:
        FunctionTool.model_validate(tool)
        assert set(tool) <= set(FunctionTool.model_fields)
    create = next(t for t in flat if t["name"] == "create_finetune_job")["parameters"]
    assert {"idempotency_key", "budget_usd", "model"} <= set(create["required"])
    validator = jsonschema.Draft202012Validator(create)
    good = {"model": "m", "training_file": "file-1", "idempotency_key": "k", "budget_usd": 2.5}
    assert validator.is_valid(good)
    assert not validator.is_valid({k: v for k, v in good.items() if k != "budget_usd"})
    assert not validator.is_valid({**good, "targets": "laptop-cpu"})  # a list, per the job config


def test_openai_and_mcp_schemas_come_from_the_same_models(server) -> None:
    from api.agent.mcp_server import build_mcp_server
    from api.agent.tools import _inline_refs

    openai_tools = {
        t["function"]["name"]: t["function"] for t in httpx.get(f"{server.base_url}/tools").json()["data"]
    }
    mcp_tools = asyncio.run(build_mcp_server().list_tools())
    assert {t.name for t in mcp_tools} == set(openai_tools)
    for t in mcp_tools:
        inlined = _inline_refs(t.input_schema, t.input_schema.get("$defs", {}))
        assert inlined["properties"] == openai_tools[t.name]["parameters"]["properties"]
        assert inlined.get("required") == openai_tools[t.name]["parameters"].get("required")
        assert t.description == openai_tools[t.name]["description"]


def test_call_tools_by_name(api, tiny_base) -> None:
    f = api.post("/tools/upload_training_file", json={"rows": sentiment_rows(40)}).json()
    assert f["object"] == "file" and f["row_count"] == 40
    body = {"model": tiny_base, "training_file": f["id"]}
    plan = api.post("/tools/plan_finetune", json=body).json()
    assert plan["object"] == "fine_tuning.job.plan" and plan["quote"]["total_usd"] > 0
    args = {**body, "idempotency_key": "rest-1", "budget_usd": plan["quote"]["total_usd"] * 3}
    job = api.post("/tools/create_finetune_job", json=args).json()
    assert job["created"] and job["status"] == "queued"
    assert api.post("/tools/create_finetune_job", json=args).json()["created"] is False
    reused = api.post("/tools/create_finetune_job", json={**args, "seed": 1})
    assert reused.status_code == 409 and reused.json()["error"]["param"] == "idempotency_key"
    over = api.post(
        "/tools/create_finetune_job", json={**args, "idempotency_key": "rest-2", "budget_usd": 1e-6}
    )
    assert over.status_code == 402 and over.json()["error"]["code"] == "job_budget_exceeded"
    assert api.post("/tools/get_job", json={"job_id": job["id"]}).json()["status"] == "queued"
    assert api.post("/tools/cancel_job", json={"job_id": job["id"]}).json()["status"] == "cancelled"


def test_tool_call_errors(api, server, tiny_base) -> None:
    missing = api.post("/tools/create_finetune_job", json={"model": tiny_base, "budget_usd": 1})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "idempotency_key"
    assert "idempotency_key: Field required" in missing.json()["error"]["message"]
    bad = api.post("/tools/upload_training_file", json={"content": "{}\n", "rows": []})
    assert bad.status_code == 400 and "exactly one of content" in bad.json()["error"]["message"]
    unknown = api.post("/tools/train_everything", json={})
    assert unknown.status_code == 404 and "plan_finetune" in unknown.json()["error"]["message"]
    assert api.post("/tools/get_job", json={"job_id": "ftjob-nope"}).json()["error"]["param"] == "job_id"
    assert httpx.post(f"{server.base_url}/tools/get_job", json={"job_id": "x"}).status_code == 401


def test_download_url_is_presigned_on_s3(api, api_key, tiny_base) -> None:
    data = b"GGUF" + bytes(range(256)) * 4
    art = seed_artifact(api_key, cancelled_job(api, tiny_base), data)
    link = api.post("/tools/get_artifact_download_url", json={"artifact_id": art}).json()
    assert link["requires_api_key"] is False and link["expires_in_s"] == 3600
    assert httpx.get(link["url"]).content == data and link["sha256"] == hashlib.sha256(data).hexdigest()
    other = httpx.post(
        api.base_url.join("tools/get_artifact_download_url"),
        json={"artifact_id": art},
        headers={"Authorization": f"Bearer {new_key()}"},
    )
    assert other.status_code == 404 and other.json()["error"]["param"] == "artifact_id"


def test_download_url_streams_from_the_api_on_a_local_store(
    api, api_key, tiny_base, tmp_path, monkeypatch
) -> None:
    from infra.storage import LocalStore
    from services import artifacts

    store = LocalStore(tmp_path / "store")
    monkeypatch.setattr(artifacts, "get_store", lambda: store)  # the server runs in this process
    data = b"GGUF-local" * 100
    art = seed_artifact(api_key, cancelled_job(api, tiny_base), data, store)
    link = api.post("/tools/get_artifact_download_url", json={"artifact_id": art}).json()
    assert link["requires_api_key"] is True and link["expires_in_s"] is None
    assert link["url"] == f"{str(api.base_url).removesuffix('/v1/')}/v1/artifacts/{art}/content"
    assert httpx.get(link["url"]).status_code == 401
    assert api.get(link["url"]).content == data
    assert asyncio.run(_mcp_download_url(mcp_url(str(api.base_url)), api_key, art)) == link  # same over MCP


async def _mcp_download_url(url: str, key: str, artifact_id: str) -> dict[str, Any]:
    async with http_client(url, key) as mcp:
        return ok(await mcp.call_tool("get_artifact_download_url", {"artifact_id": artifact_id}))


def test_an_agent_queues_a_device_measurement_and_polls_it(api, api_key, tiny_base) -> None:
    art = seed_artifact(api_key, cancelled_job(api, tiny_base), b"GGUF" + bytes(64))
    bench = api.post(
        "/tools/measure_on_device", json={"artifact_id": art, "profile": "raspberry-pi-5"}
    ).json()
    assert (
        bench["status"] == "queued" and bench["profile"] == "raspberry-pi-5" and bench["artifact_id"] == art
    )
    polled = api.post("/tools/get_device_benchmark", json={"benchmark_id": bench["id"]}).json()
    assert polled["id"] == bench["id"] and polled["status"] == "queued"
    other = httpx.post(
        api.base_url.join("tools/get_device_benchmark"),
        json={"benchmark_id": bench["id"]},
        headers={"Authorization": f"Bearer {new_key()}"},
    )
    assert other.status_code == 404 and other.json()["error"]["param"] == "benchmark_id"
    bad = api.post("/tools/measure_on_device", json={"artifact_id": art, "profile": "toaster"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "profile"
