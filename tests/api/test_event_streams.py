"""Live events over real HTTP (issue 15 item 1): `GET /v1/fine_tuning/jobs/{id}/events` as
Server-Sent Events and `GET /v1/synthetic_datasets/{id}/events`, from the live server to an httpx
client. Rows and events are written straight to the database as a worker would write them
(tests/support/job_rows.py): no training, no worker, each stream a second or two at most."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest

from infra.db import session_scope
from infra.models import JobEvent
from infra.settings import get_settings
from tests.conftest import new_key
from tests.support.job_rows import add_event, end_job, new_dataset, new_job, set_dataset

EVENT, PROGRESS = "fine_tuning.job.event", "synthetic_dataset.progress"


@pytest.fixture()
def api(server, api_key) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"}
    # a stream that never sends what a test waits for fails it in 10 s instead of hanging
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def fast_polls(platform, monkeypatch) -> None:
    """Streams read the database every 0.1 s here (1 s by default), so a change arrives at once."""
    monkeypatch.setattr(get_settings(), "event_stream_poll_s", 0.1)


def blocks(lines: Iterable[str], comments: bool = True) -> Iterator[dict[str, str]]:
    """The stream's frames as {field: value}; a comment is {"": text} (left out unless asked)."""
    block: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(": ")
            block[name] = value
            continue
        if block and (comments or "" not in block):
            yield block
        block = {}


def frames(text: str) -> list[dict[str, str]]:
    return list(blocks(text.split("\n")))


def data(block: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(block["data"]))


def stream(api: httpx.Client, job_id: str, **kwargs: Any) -> httpx.Response:
    params = {"stream": "true"} | kwargs.pop("params", {})
    return api.get(f"/fine_tuning/jobs/{job_id}/events", params=params, **kwargs)


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return dict(r.json()["error"])


# ---- jobs ---------------------------------------------------------------------------------------


def test_an_ended_jobs_stream_is_every_event_oldest_first_then_done(api, api_key) -> None:
    job_id = new_job(api_key)
    ids = [add_event(job_id, f"step {i}", step=i) for i in range(3)]
    end_job(job_id, "succeeded")

    r = stream(api, job_id)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    got = frames(r.text)
    assert [f["event"] for f in got] == [EVENT, EVENT, EVENT, "done"]
    assert [f["id"] for f in got[:3]] == ids and "id" not in got[3]
    events = [data(f) for f in got[:3]]
    assert [e["message"] for e in events] == ["step 0", "step 1", "step 2"]
    assert [e["id"] for e in events] == ids and events[1]["data"] == {"step": 1}
    assert {e["object"] for e in events} == {"fine_tuning.job.event"}
    done = data(got[3])
    assert (done["object"], done["id"], done["status"]) == ("fine_tuning.job", job_id, "succeeded")

    # Accept: text/event-stream alone streams too (EventSource sends no query parameter) ...
    accepted = api.get(f"/fine_tuning/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
    assert [f.get("id") for f in frames(accepted.text)] == [*ids, None]
    # ... and without either the JSON page is as it was: newest first
    page = api.get(f"/fine_tuning/jobs/{job_id}/events").json()
    assert page["object"] == "list" and [e["id"] for e in page["data"]] == ids[::-1]


def test_a_resumed_stream_sends_only_the_later_events(api, api_key) -> None:
    job_id = new_job(api_key)
    ids = [add_event(job_id, f"step {i}") for i in range(3)]
    end_job(job_id, "cancelled")

    def sent(**kwargs: Any) -> list[str | None]:
        got = frames(stream(api, job_id, **kwargs).text)
        assert got[-1]["event"] == "done" and data(got[-1])["status"] == "cancelled"
        return [f.get("id") for f in got[:-1]]

    assert sent(headers={"Last-Event-ID": ids[0]}) == ids[1:]
    assert sent(params={"after": ids[1]}) == ids[2:]
    assert sent(headers={"Last-Event-ID": ids[2]}) == []  # all seen: only done
    # a reconnect's header is newer than the URL it reconnects to
    assert sent(params={"after": ids[0]}, headers={"Last-Event-ID": ids[1]}) == ids[2:]


def test_an_unknown_resume_point_is_a_404_naming_the_param(api, api_key) -> None:
    job_id = new_job(api_key)
    add_event(job_id, "step 0")
    elsewhere = add_event(new_job(api_key), "an event of another job of the same org")

    err = error_of(stream(api, job_id, headers={"Last-Event-ID": "ftevent-nope"}), 404)
    assert (err["param"], err["code"], err["type"]) == ("Last-Event-ID", "event_not_found", "not_found_error")
    assert "ftevent-nope" in err["message"]
    assert error_of(stream(api, job_id, params={"after": "ftevent-nope"}), 404)["param"] == "after"
    assert (
        error_of(stream(api, job_id, headers={"Last-Event-ID": elsewhere}), 404)["param"] == "Last-Event-ID"
    )


def test_another_orgs_job_or_dataset_is_a_404_and_nothing_streams(api) -> None:
    theirs = new_key()
    job_id, dataset_id = new_job(theirs), new_dataset(theirs)
    secret = add_event(job_id, "their secret event")
    end_job(job_id)
    for r in (
        stream(api, job_id),
        api.get(f"/fine_tuning/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}),
        stream(api, job_id, headers={"Last-Event-ID": secret}),
    ):
        assert error_of(r, 404)["code"] == "job_not_found" and "secret" not in r.text
    assert error_of(api.get(f"/synthetic_datasets/{dataset_id}/events"), 404)["code"] == "dataset_not_found"


def test_a_live_job_streams_events_as_they_are_written_then_done(api, api_key) -> None:
    job_id = new_job(api_key)
    first = add_event(job_id, "Stage prepare started", stage="prepare")
    with api.stream("GET", f"/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as r:
        assert r.status_code == 200
        live = blocks(r.iter_lines(), comments=False)
        assert next(live)["id"] == first
        second = add_event(job_id, "Stage train started", stage="train")  # written while it is open
        got = next(live)
        assert (got["id"], data(got)["message"]) == (second, "Stage train started")
        third = add_event(job_id, "Job failed: out of budget")
        end_job(job_id, "failed")
        assert next(live)["id"] == third
        done = next(live)
        assert done["event"] == "done" and data(done)["status"] == "failed"
        assert list(live) == []  # and the server closed the stream


def test_an_event_that_commits_after_a_later_one_is_still_sent(api, api_key) -> None:
    """Two writers: one takes its seq first and commits last (seqs are taken at INSERT)."""
    job_id = new_job(api_key)
    with api.stream("GET", f"/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as r:
        live = blocks(r.iter_lines(), comments=False)
        with session_scope() as slow_writer:
            early = JobEvent(job_id=job_id, message="lower seq, committed last")
            slow_writer.add(early)
            slow_writer.flush()
            late = add_event(job_id, "higher seq, committed first")
            assert next(live)["id"] == late
            time.sleep(0.5)  # several reads pass while the lower seq is still uncommitted
            early_id = early.id
        end_job(job_id)  # so a stream that lost the event ends (with done) instead of waiting
        rest = list(live)
        assert [f.get("id") for f in rest] == [early_id, None] and rest[1]["event"] == "done"
        assert data(rest[0])["message"] == "lower seq, committed last"


def test_keep_alives_fill_silences_and_a_stream_ends_at_its_lifetime(api, api_key, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "event_stream_keepalive_s", 0.2)
    monkeypatch.setattr(get_settings(), "event_stream_max_s", 1.0)
    job_id = new_job(api_key)  # running, and nothing happens to it
    only = add_event(job_id, "Stage train started")
    started = time.monotonic()
    got = frames(stream(api, job_id).text)
    assert time.monotonic() - started < 5
    assert got[0]["id"] == only
    assert {"": "keep-alive"} in got[1:-1] and all("" in f for f in got[1:])  # comments only after
    assert "lifetime" in got[-1][""] and "Last-Event-ID" in got[-1][""]  # no done: reconnect


# ---- synthetic datasets -------------------------------------------------------------------------


def test_a_dataset_streams_each_change_then_done(api, api_key) -> None:
    dataset_id = new_dataset(api_key)
    with api.stream("GET", f"/synthetic_datasets/{dataset_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        live = blocks(r.iter_lines(), comments=False)
        first = next(live)
        assert first["event"] == PROGRESS and data(first)["id"] == dataset_id
        assert (data(first)["status"], data(first)["progress"]["kept"]) == ("queued", 0)
        time.sleep(0.5)  # reads of the unchanged state send nothing
        set_dataset(dataset_id, "running", phase="generate", kept=4)
        second = next(live)
        assert (data(second)["status"], data(second)["progress"]["kept"]) == ("running", 4)
        assert second["id"] != first["id"]
        set_dataset(dataset_id, "succeeded", phase="done", kept=10)
        third, done = next(live), next(live)
        assert third["event"] == PROGRESS and data(third)["status"] == "succeeded"
        assert done["event"] == "done" and data(done)["progress"]["kept"] == 10
        assert list(live) == []


def test_a_resumed_dataset_stream_skips_the_state_it_names(api, api_key) -> None:
    dataset_id = new_dataset(api_key, "running", phase="generate", kept=3)
    url = f"/synthetic_datasets/{dataset_id}/events"
    with api.stream("GET", url) as r:
        now_id = next(blocks(r.iter_lines(), comments=False))["id"]
    with api.stream("GET", url, headers={"Last-Event-ID": now_id}) as r:
        live = blocks(r.iter_lines(), comments=False)
        time.sleep(0.3)
        set_dataset(dataset_id, "running", kept=5)
        changed = next(live)  # the first frame: the unchanged state was not sent again
        assert data(changed)["progress"]["kept"] == 5 and changed["id"] != now_id
        set_dataset(dataset_id, "failed")
        assert [f["event"] for f in live] == [PROGRESS, "done"]
    ended = frames(api.get(url).text)
    assert [f["event"] for f in ended] == [PROGRESS, "done"]
    resumed = frames(api.get(url, headers={"Last-Event-ID": ended[0]["id"]}).text)
    assert [f["event"] for f in resumed] == ["done"] and data(resumed[0])["status"] == "failed"
