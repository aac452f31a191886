"""The MCP server through the `mcp` SDK's own client, against the live API: streamable HTTP at /mcp
and `edgetune mcp` over stdio. Tools run on the real services (PostgreSQL, S3 on moto)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import sentiment_rows
from tests.conftest import ROOT, new_key, running_worker
from tests.support.mcp_client import error, http_client, mcp_url, ok, stdio_client

TOOL_NAMES = {
    "plan_finetune",
    "create_finetune_job",
    "get_job",
    "cancel_job",
    "list_artifacts",
    "get_artifact_download_url",
    "upload_training_file",
    "generate_synthetic_data",
    "get_synthetic_dataset",
    "measure_on_device",
    "get_device_benchmark",
}


def _body(tiny_base: str, file_id: str) -> dict[str, Any]:
    return {"model": tiny_base, "training_file": file_id, "targets": ["laptop-cpu"]}


async def _plan_create_poll(url: str, key: str, tiny_base: str) -> None:
    async with http_client(url, key) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) >= TOOL_NAMES
        create = tools["create_finetune_job"]
        assert {"idempotency_key", "budget_usd", "model"} <= set(create.input_schema["required"])
        assert create.output_schema and "created" in create.output_schema["properties"]
        assert tools["plan_finetune"].annotations.read_only_hint is True

        f = ok(await mcp.call_tool("upload_training_file", {"rows": sentiment_rows(40)}))
        assert f["id"].startswith("file-") and f["row_count"] == 40

        plan = ok(await mcp.call_tool("plan_finetune", _body(tiny_base, f["id"])))
        quote = plan["quote"]["total_usd"]
        assert quote > 0 and plan["fits"] and plan["budget"]["allowed_to_proceed"]

        args = {**_body(tiny_base, f["id"]), "idempotency_key": "mcp-run-1", "budget_usd": quote * 3}
        job = ok(await mcp.call_tool("create_finetune_job", args))
        assert job["created"] and job["status"] == "queued" and job["id"].startswith("ftjob-")
        assert any("quoted" in e["message"] for e in job["recent_events"])
        again = ok(await mcp.call_tool("create_finetune_job", args))  # a retried call
        assert again["id"] == job["id"] and again["created"] is False

        polled = ok(await mcp.call_tool("get_job", {"job_id": job["id"], "events": 2}))
        assert polled["status"] in ("queued", "running") and len(polled["recent_events"]) == 2
        assert ok(await mcp.call_tool("list_artifacts", {"job_id": job["id"]}))["data"] == []
        cancelled = ok(await mcp.call_tool("cancel_job", {"job_id": job["id"]}))
        assert cancelled["status"] == "cancelled"  # leave nothing for a later test's worker


def test_mcp_client_lists_tools_and_plans_creates_polls(server, api_key, tiny_base) -> None:
    asyncio.run(_plan_create_poll(mcp_url(server.base_url), api_key, tiny_base))


async def _errors(url: str, key: str, other_key: str, tiny_base: str) -> None:
    async with http_client(url, other_key) as other:
        f = ok(await other.call_tool("upload_training_file", {"rows": sentiment_rows(40)}))
        plan = ok(await other.call_tool("plan_finetune", _body(tiny_base, f["id"])))
        theirs = ok(
            await other.call_tool(
                "create_finetune_job",
                {
                    **_body(tiny_base, f["id"]),
                    "idempotency_key": "k1",
                    "budget_usd": plan["quote"]["total_usd"] * 3,
                },
            )
        )
        ok(await other.call_tool("cancel_job", {"job_id": theirs["id"]}))
    async with http_client(url, key) as mcp:
        body = _body(tiny_base, "file-whatever")
        assert "idempotency_key" in error(
            await mcp.call_tool("create_finetune_job", {**body, "budget_usd": 1})
        )
        assert "budget_usd" in error(
            await mcp.call_tool("create_finetune_job", {**body, "idempotency_key": "a"})
        )
        assert "budget_usd" in error(
            await mcp.call_tool("create_finetune_job", {**body, "idempotency_key": "a", "budget_usd": -1})
        )
        for tool in ("get_job", "cancel_job"):  # another org's job does not exist for this one
            msg = error(await mcp.call_tool(tool, {"job_id": theirs["id"]}))
            assert "No such fine-tuning job" in msg and "param: job_id" in msg
        msg = error(await mcp.call_tool("plan_finetune", {**_body(tiny_base, f["id"])}))
        assert "No such file" in msg and "training_file" in msg  # their file, too
        msg = error(await mcp.call_tool("upload_training_file", {"content": '{"messages": []}\nnot json\n'}))
        assert "invalid row" in msg and "param: content" in msg
        msg = error(await mcp.call_tool("plan_finetune", {"model": tiny_base, "task": {"description": "x"}}))
        assert "task.description" in msg or "description" in msg


def test_tool_errors_name_the_field_and_other_orgs_jobs_are_invisible(server, api_key, tiny_base) -> None:
    asyncio.run(_errors(mcp_url(server.base_url), api_key, new_key(), tiny_base))


SPEC = {
    "type": "classification",
    "description": "Sort support tickets by topic.",
    "labels": ["billing", "bug"],
}


async def _synthetic(url: str, key: str, other_key: str) -> None:
    async with http_client(url, key) as mcp:
        assert "max_cost_usd" in error(await mcp.call_tool("generate_synthetic_data", {"task": SPEC}))
        no_labels = {"task": {**SPEC, "labels": None}, "max_cost_usd": 1}
        assert "task.labels" in error(await mcp.call_tool("generate_synthetic_data", no_labels))
        ds = ok(await mcp.call_tool("generate_synthetic_data", {"task": SPEC, "max_cost_usd": 0.5}))
        assert ds["status"] == "queued" and ds["id"].startswith("synth-")
        assert ds["teacher"]["max_cost_usd"] == 0.5  # the cap reached the run's teacher settings
        polled = ok(await mcp.call_tool("get_synthetic_dataset", {"dataset_id": ds["id"]}))
        assert polled["id"] == ds["id"] and polled["task"]["labels"] == SPEC["labels"]
    async with http_client(url, other_key) as other:
        msg = error(await other.call_tool("get_synthetic_dataset", {"dataset_id": ds["id"]}))
        assert "No such synthetic dataset" in msg and "param: dataset_id" in msg
    # leave nothing queued for a later test's worker (a cancelled dataset is never claimed)
    httpx.post(
        url.removesuffix("/mcp") + f"/v1/synthetic_datasets/{ds['id']}/cancel",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).raise_for_status()


def test_synthetic_data_tools_start_and_poll_a_dataset_with_a_cost_cap(server, api_key) -> None:
    asyncio.run(_synthetic(mcp_url(server.base_url), api_key, new_key()))


def test_mcp_endpoint_needs_a_valid_api_key(server) -> None:
    url = mcp_url(server.base_url)
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer et-nope"}):
        r = httpx.post(url, json=hello, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert (
        httpx.get(server.base_url.removesuffix("/v1") + "/nope").status_code == 404
    )  # /mcp is not a catch-all


async def _stdio(env: dict[str, str]) -> None:
    async with stdio_client(ROOT, env) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == TOOL_NAMES
        assert ok(await mcp.call_tool("list_artifacts", {}))["data"] == []  # the key's org: none yet
        assert "job_id" in error(await mcp.call_tool("get_job", {"job_id": "ftjob-nope"}))


def test_stdio_server_answers_as_the_org_of_its_key(platform, api_key) -> None:
    asyncio.run(_stdio({**platform.env, "EDGETUNE_API_KEY": api_key}))
    bad = subprocess.run(
        [sys.executable, "-m", "cli.main", "mcp"],
        env={**platform.env, "PATH": "/usr/bin:/bin", "EDGETUNE_API_KEY": "et-wrong"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode != 0 and "Incorrect API key" in bad.stderr


# ---- the whole flow, with a worker --------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({"EDGETUNE_CHECKPOINT_STEPS": "10"}, platform.var_dir / "mcp-worker.log") as proc:
        yield proc


async def _full_flow(url: str, key: str, tiny_base: str) -> None:
    async with http_client(url, key) as mcp:
        f = ok(await mcp.call_tool("upload_training_file", {"rows": sentiment_rows(48)}))
        hp = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 10}
        # seed 7, as test_end_to_end: the random tiny model's Q4_K_M artifact stays within the
        # default gate's 0.05 of the fine-tune on this run (other seeds can lose more to quantization)
        body = {
            **_body(tiny_base, f["id"]),
            "seed": 7,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        }
        quote = ok(await mcp.call_tool("plan_finetune", body))["quote"]["total_usd"]
        # the cap is billed on measured seconds: a generous one, so a loaded CI machine stays under it
        args = {**body, "idempotency_key": "full-1", "budget_usd": max(quote * 20, 0.05)}
        job = ok(await mcp.call_tool("create_finetune_job", args))
        deadline = time.monotonic() + 900
        while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            await asyncio.sleep(2)
            job = ok(await mcp.call_tool("get_job", {"job_id": job["id"]}))
        assert job["status"] == "succeeded", (job["error"], [e["message"] for e in job["recent_events"]])
        arts = ok(await mcp.call_tool("list_artifacts", {"job_id": job["id"]}))["data"]
        assert sorted(a["target"] for a in arts) == ["laptop-cpu", "laptop-cpu-adapter"]  # LoRA: + adapter
        gguf = next(a for a in arts if a["target"] == "laptop-cpu")
        link = ok(await mcp.call_tool("get_artifact_download_url", {"artifact_id": gguf["id"]}))
        assert link["requires_api_key"] is False and link["expires_in_s"]  # S3 (moto): presigned
        data = httpx.get(link["url"]).content
        assert data[:4] == b"GGUF" and hashlib.sha256(data).hexdigest() == link["sha256"]


@pytest.mark.slow
def test_agent_fine_tunes_and_downloads_over_mcp(server, api_key, tiny_base, worker) -> None:
    asyncio.run(_full_flow(mcp_url(server.base_url), api_key, tiny_base))
