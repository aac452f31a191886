"""Worker pools per compute class (issue 17 item 1): a job goes to the queue of the cheapest pool it
fits (or the class it names), a worker consumes its own class's queue, a job whose class has no
live worker says so, and the operator sees each pool's depth and live workers.

The "l4-24gb" pool here is a CPU worker that says it is one (EDGETUNE_WORKER_COMPUTE): routing
and consumption are what is tested, not the card."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from services.errors import InvalidRequest
from services.plans import _route
from services.pools import require_fit
from services.schemas.plans import GpuFitPublic
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import _reset_caches, running_worker

TOKEN = "operator-secret-for-tests"
POOLS = "cpu,l4-24gb"


@pytest.fixture(scope="module")
def pooled(platform) -> Iterator[dict[str, str]]:
    """This module's settings: two pools and an operator token, for the API in this process and
    the workers it starts; restored afterwards so other modules keep one queue."""
    import os

    env = {"EDGETUNE_COMPUTE_POOLS": POOLS, "EDGETUNE_OPERATOR_TOKEN": TOKEN}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_caches()
    yield env
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _reset_caches()


@pytest.fixture()
def client(server, api_key, pooled) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


@pytest.fixture()
def body(client, tiny_base) -> dict[str, Any]:
    f = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(sentiment_rows(40)))), purpose="fine-tune")
    return {"model": tiny_base, "training_file": f.id}


def _plan(server, api_key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/fine_tuning/jobs/plan",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120,
    )


def _pools(server, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.base_url}/operator/pools", headers=headers, timeout=30)


def test_the_plan_routes_to_the_pool_with_the_lowest_quote(server, api_key, body, platform) -> None:
    named = {}
    for compute in POOLS.split(","):
        r = _plan(server, api_key, {**body, "compute_class": compute})
        assert r.status_code == 200, r.text
        plan = r.json()
        assert plan["compute"] == compute == plan["quote"]["compute"] and plan["fits"]
        named[compute] = plan
    assert named["cpu"]["queue"] == platform.env["EDGETUNE_QUEUE"]  # CPU jobs share the CPU queue
    assert named["l4-24gb"]["queue"] == f"{platform.env['EDGETUNE_QUEUE']}.l4-24gb"
    # the l4 job trains and scores on its class; its export is quoted on a CPU worker, where it runs
    units = {
        i["stage"]: i["unit"] for i in named["l4-24gb"]["quote"]["items"] if i["unit"].endswith("_second")
    }
    assert units["train"] == units["evaluate"] == "l4-24gb_second" and units["export"] == "cpu_second"
    # the classes price differently (rate x estimated seconds), so the choice is not a tie
    totals = {c: p["quote"]["total_usd"] for c, p in named.items()}
    assert totals["cpu"] != totals["l4-24gb"]
    chosen = _plan(server, api_key, body).json()
    assert chosen["compute"] == min(totals, key=lambda c: totals[c])
    assert chosen["quote"] == named[chosen["compute"]]["quote"]


def test_a_class_outside_the_pools_is_refused_naming_the_field(client, server, api_key, body) -> None:
    r = _plan(server, api_key, {**body, "compute_class": "h100-80gb"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "compute_class" and err["code"] == "unknown_compute_class"
    assert "cpu, l4-24gb" in err["message"]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(**body, extra_body={"compute_class": "h100-80gb"})
    assert client.fine_tuning.jobs.list().data == []  # nothing stored


def _fit(gpu: str, fits: bool) -> GpuFitPublic:
    return GpuFitPublic(
        gpu=gpu,
        memory_gib=24.0,
        peak_memory_gib=30.0 if not fits else 4.0,
        fits=fits,
        no_fit_reason=None if fits else f"needs 30 GiB, over {gpu}",
        estimated_train_seconds=60.0,
    )


def test_a_job_that_fits_no_pool_is_refused_at_create(pooled, monkeypatch) -> None:
    from domain.job_config import JobConfig

    with monkeypatch.context() as m:
        m.setenv("EDGETUNE_COMPUTE_POOLS", "l4-24gb,a100-40gb")
        _reset_caches()
        memory = [_fit("l4-24gb", False), _fit("a100-40gb", False), _fit("h100-80gb", True)]
        cfg = JobConfig(model="m", training_file="file-x")
        compute, fits, reason = _route(cfg, memory, lambda c: 1.0)
        assert not fits and reason is not None and "l4-24gb: needs 30 GiB" in reason and "a100-40gb" in reason
        plan: Any = type("P", (), {"fits": fits, "no_fit_reason": reason})()
        with pytest.raises(InvalidRequest) as exc:
            require_fit(plan, None)
        assert exc.value.param == "model" and exc.value.code == "no_compute_fits"
        with pytest.raises(InvalidRequest) as exc:
            require_fit(plan, "l4-24gb")
        assert exc.value.param == "compute_class"
        # the cheapest among those that fit, whatever order the operator listed them in
        m.setenv("EDGETUNE_COMPUTE_POOLS", "h100-80gb,l4-24gb")
        _reset_caches()
        memory = [_fit("l4-24gb", True), _fit("h100-80gb", True)]
        assert _route(cfg, memory, {"h100-80gb": 2.0, "l4-24gb": 1.0}.__getitem__) == ("l4-24gb", True, None)
    _reset_caches()


def test_operator_routes_need_the_operator_token(server, api_key, pooled, monkeypatch) -> None:
    assert _pools(server, None).status_code == 401
    assert _pools(server, "wrong").json()["error"]["code"] == "invalid_operator_token"
    assert _pools(server, api_key).status_code == 401  # a tenant's key never opens them
    with monkeypatch.context() as m:
        m.delenv("EDGETUNE_OPERATOR_TOKEN")
        _reset_caches()
        assert _pools(server).status_code == 404  # no token configured: the routes do not exist
    _reset_caches()


def test_a_multi_gpu_queue_is_listed_while_a_job_waits_there(server, pooled, platform) -> None:
    """A class's N-GPU queue (infra/queue.py queue_for) shows only when in use: here a message
    waits on the l4 class's 2-GPU queue, no worker holds 2 GPUs, and the operator sees both."""
    from infra import queue

    name = f"{platform.env['EDGETUNE_QUEUE']}.l4-24gb.x2"
    assert all(p["queue"] != name for p in _pools(server).json()["data"])
    queue.send(queue.RUN_JOB, "ftjob-waiting-for-two-gpus", name)
    try:
        pool = _pool(server, name)
        assert pool["gpus"] == 2 and pool["compute"] == ["l4-24gb"]
        assert pool["depth"] == 1 and pool["live_workers"] == []
        assert _pool(server, f"{platform.env['EDGETUNE_QUEUE']}.l4-24gb")["gpus"] == 1
    finally:
        with queue.producer().connection_for_write() as conn:
            conn.default_channel.queue_purge(name)
    assert all(p["queue"] != name for p in _pools(server).json()["data"])


def _running_event(client: openai.OpenAI, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in client.fine_tuning.jobs.list_events(job_id, limit=100):
            if e.message.startswith("Job running on") and e.data:
                return dict(e.data)
        time.sleep(1)
    pytest.fail(f"job {job_id} never started within {timeout}s")


def _pool(server, queue: str) -> dict[str, Any]:
    r = _pools(server)
    assert r.status_code == 200, r.text
    assert r.json()["routing"] == "per_class"
    return next(p for p in r.json()["data"] if p["queue"] == queue)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def test_each_job_runs_on_a_worker_of_its_class_and_waits_visibly_for_one(
    client, server, body, platform, pooled
) -> None:
    queue = platform.env["EDGETUNE_QUEUE"]
    l4_queue = f"{queue}.l4-24gb"
    slow = {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 30}}}}
    l4_job = client.fine_tuning.jobs.create(**body, **slow, extra_body={"compute_class": "l4-24gb"})
    # no l4 worker yet: the job says so instead of waiting silently, and the operator sees it queued
    notes = [e for e in client.fine_tuning.jobs.list_events(l4_job.id) if "No live worker" in e.message]
    assert len(notes) == 1 and l4_queue in notes[0].message and notes[0].level == "warn"
    pool = _pool(server, l4_queue)
    assert pool["depth"] == 1 and pool["live_workers"] == [] and pool["compute"] == ["l4-24gb"]

    l4_env = {"EDGETUNE_WORKER_COMPUTE": "l4-24gb", **pooled}
    with running_worker(pooled, platform.var_dir / "worker-pool-cpu.log") as cpu_worker:
        cpu_job = client.fine_tuning.jobs.create(**body, **slow, extra_body={"compute_class": "cpu"})
        started = _running_event(client, cpu_job.id)
        assert started["compute"] == "cpu" and started["queue"] == queue
        # the CPU worker never took the l4 job, though it has been idle on its own queue
        assert client.fine_tuning.jobs.retrieve(l4_job.id).status == "queued"
        client.fine_tuning.jobs.cancel(cpu_job.id)
        with running_worker(l4_env, platform.var_dir / "worker-pool-l4.log") as l4_worker:
            started = _running_event(client, l4_job.id)
            assert started["compute"] == "l4-24gb" and started["queue"] == l4_queue
            pool = _pool(server, l4_queue)
            assert pool["depth"] == 0 and len(pool["live_workers"]) == 1
            assert len(_pool(server, queue)["live_workers"]) == 1  # the CPU worker, on its own queue
            client.fine_tuning.jobs.cancel(l4_job.id)
            _stop(l4_worker)
        _stop(cpu_worker)
