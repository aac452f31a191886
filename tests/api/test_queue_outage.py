"""Queue outages and lost queue messages (issue 19, items 3 and 4), done for real: a Redis of the
test's own is the broker, stopped and started by the test, on PostgreSQL.

* With the broker down, create answers 503 with Retry-After and the error shape, names no internal
  address, and stores nothing: the same Idempotency-Key creates and queues the job once the broker
  is back (README, "Queue outages").
* A queued job whose message is gone (a Redis without persistence restarted) is queued again by
  the reaper, exactly once, even with two reapers at the same moment.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select, update

from infra.db import session_scope
from infra.models import Job, JobEvent, SyntheticDataset
from infra.queue import producer
from infra.settings import get_settings
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence, as the Redis whose restart loses the queue's messages.
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail("the test's redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def messages(self) -> list[dict[str, Any]]:
        """The task messages waiting in the job queue: (task name, args) of each."""
        raw = redis.Redis(port=self.port).lrange(get_settings().queue, 0, -1)
        out = []
        for item in raw:
            msg = json.loads(item)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            out.append({"task": msg["headers"]["task"], "args": args})
        return out


@pytest.fixture()
def broker(platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    b = Broker(free_port())
    b.start()
    monkeypatch.setenv("EDGETUNE_BROKER_URL", b.url)
    get_settings.cache_clear()
    producer.cache_clear()
    yield b
    b.stop()
    monkeypatch.undo()
    get_settings.cache_clear()
    producer.cache_clear()


@pytest.fixture()
def api(server, api_key) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as c:
        yield c


@pytest.fixture()
def job_body(api, tiny_base) -> dict[str, Any]:
    files = {"file": ("t.jsonl", io.BytesIO(jsonl(sentiment_rows(40))))}
    r = api.post("/files", data={"purpose": "fine-tune"}, files=files)
    assert r.status_code == 200, r.text
    return {"model": tiny_base, "training_file": r.json()["id"]}


def _jobs_with_key(key: str) -> list[Job]:
    with session_scope() as session:
        return list(session.scalars(select(Job).where(Job.idempotency_key == key)).all())


def _assert_queue_down_error(r: httpx.Response, broker: Broker) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "service_unavailable_error" and error["code"] == "queue_unavailable"
    # Neither the broker's address nor its kind reaches the client.
    for internal in (str(broker.port), "127.0.0.1", "redis", "6379"):
        assert internal not in r.text.lower(), r.text


def test_a_queue_outage_stores_nothing_and_the_same_key_succeeds_once_it_is_back(
    api, broker: Broker, job_body
) -> None:
    key = "agent-run-7f3a"
    broker.stop()
    started = time.monotonic()
    r = api.post("/fine_tuning/jobs", json=job_body, headers={"Idempotency-Key": key})
    _assert_queue_down_error(r, broker)
    assert time.monotonic() - started < 30  # answered, not hung on the dead broker
    assert _jobs_with_key(key) == []  # nothing under the key: the retry is free to create
    assert api.get("/fine_tuning/jobs").json()["data"] == []

    broker.start()  # the same port, empty: as after a restart
    r = api.post("/fine_tuning/jobs", json=job_body, headers={"Idempotency-Key": key})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "queued" and job["error"] is None
    assert broker.messages() == [{"task": "edgetune.run_job", "args": [job["id"]]}]  # started

    again = api.post("/fine_tuning/jobs", json=job_body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    assert len(broker.messages()) == 1  # a replay starts nothing new
    assert [j.id for j in _jobs_with_key(key)] == [job["id"]]


def test_a_queue_outage_stores_no_synthetic_dataset(api, broker: Broker) -> None:
    broker.stop()
    task = {"description": "Classify support tickets by urgency.", "labels": ["urgent", "normal"]}
    r = api.post("/synthetic_datasets", json={"task": task})
    _assert_queue_down_error(r, broker)
    assert api.get("/synthetic_datasets").json()["data"] == []


def _age(model: Any, row_id: str, seconds: int) -> None:
    """Pretend the row's message was sent `seconds` ago (instead of waiting that long)."""
    with session_scope() as session:
        older = model.enqueued_at - seconds
        session.execute(update(model).where(model.id == row_id).values(enqueued_at=older))


def _reap_concurrently(fn: Any, enqueue: Any, n: int = 2) -> list[str]:
    """`n` reapers at the same moment; each holds its transaction open a while as it sends."""
    barrier, results, lock = threading.Barrier(n), [], threading.Lock()

    def slow_enqueue(row_id: str) -> None:
        time.sleep(0.5)
        enqueue(row_id)

    def one() -> None:
        barrier.wait()
        got = fn(slow_enqueue)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_a_queued_job_whose_message_was_lost_is_requeued_exactly_once(api, broker: Broker, job_body) -> None:
    from worker.lifecycle import requeue_lost_jobs

    job = api.post("/fine_tuning/jobs", json=job_body).json()
    fresh = api.post("/fine_tuning/jobs", json={**job_body, "suffix": "fresh"}).json()
    assert len(broker.messages()) == 2
    broker.stop()  # no persistence: the restart loses both messages
    broker.start()
    assert broker.messages() == []

    def send(job_id: str) -> None:
        producer().send_task("edgetune.run_job", args=[job_id])

    after = int(get_settings().job_requeue_after_s)
    _age(Job, job["id"], after + 5)
    requeued = _reap_concurrently(requeue_lost_jobs, send)
    assert requeued.count(job["id"]) == 1 and fresh["id"] not in requeued
    mine = [m for m in broker.messages() if m["args"] in ([job["id"]], [fresh["id"]])]
    assert mine == [{"task": "edgetune.run_job", "args": [job["id"]]}]
    with session_scope() as session:
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job["id"])).all()
        row = session.get(Job, job["id"])
        assert row is not None and row.status == "queued"
    assert sum("queue message was lost" in e for e in events) == 1

    # The next pass leaves it alone: its new message is fresh.
    assert job["id"] not in requeue_lost_jobs(send)
    # Lost again later (a second failover): queued again, once more.
    _age(Job, job["id"], after + 5)
    assert requeue_lost_jobs(send).count(job["id"]) == 1


def test_a_running_or_cancelled_job_is_never_requeued_as_lost(api, broker: Broker, job_body) -> None:
    from worker.lifecycle import requeue_lost_jobs

    cancelled = api.post("/fine_tuning/jobs", json=job_body).json()
    assert api.post(f"/fine_tuning/jobs/{cancelled['id']}/cancel").status_code == 200
    running = api.post("/fine_tuning/jobs", json={**job_body, "suffix": "running"}).json()
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == running["id"]).values(status="running"))
    for job_id in (cancelled["id"], running["id"]):
        _age(Job, job_id, int(get_settings().job_requeue_after_s) + 5)
    requeued = requeue_lost_jobs(lambda job_id: None)
    assert cancelled["id"] not in requeued and running["id"] not in requeued


def test_a_broker_still_down_leaves_the_lost_job_for_the_next_pass(api, broker: Broker, job_body) -> None:
    from worker.lifecycle import requeue_lost_jobs

    job = api.post("/fine_tuning/jobs", json=job_body).json()
    _age(Job, job["id"], int(get_settings().job_requeue_after_s) + 5)

    def down(job_id: str) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        requeue_lost_jobs(down)
    with session_scope() as session:
        events = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job["id"])).all()
    assert not any("lost" in e for e in events)  # rolled back with the failed send
    assert requeue_lost_jobs(lambda job_id: None).count(job["id"]) == 1


def test_a_queued_dataset_whose_message_was_lost_is_requeued_exactly_once(api, broker: Broker) -> None:
    from worker.lifecycle import requeue_lost_datasets

    task = {"description": "Classify support tickets by urgency.", "labels": ["urgent", "normal"]}
    ds = api.post("/synthetic_datasets", json={"task": task}).json()
    _age(SyntheticDataset, ds["id"], int(get_settings().job_requeue_after_s) + 5)
    sent: list[str] = []
    requeued = _reap_concurrently(requeue_lost_datasets, sent.append)
    assert requeued.count(ds["id"]) == 1 and sent.count(ds["id"]) == 1
