"""`EdgetuneClient.wait` and `edgetune jobs get --wait` follow the job's event stream (issue 15
item 1): against the live server with rows written straight to the database (no worker), and
against a stand-in transport for what a live server does not do on cue (a connection cut
mid-frame, an older server without streams, a stream that keeps failing)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from cli.client import ApiError, EdgetuneClient
from cli.main import main
from infra.settings import get_settings
from tests.support.job_rows import add_event, end_job, new_job

MESSAGES = ["Stage prepare started", "Stage train started", "Job succeeded"]


@pytest.fixture()
def fast_polls(platform, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "event_stream_poll_s", 0.1)


@pytest.fixture()
def client(server, api_key, fast_polls) -> Iterator[EdgetuneClient]:
    c = EdgetuneClient(server.base_url.removesuffix("/v1"), api_key, timeout=10)
    yield c
    c.close()


def run_job_later(job_id: str, pause_s: float) -> threading.Thread:
    """The rest of the job's life, written while the client waits: two stages, then success."""

    def later() -> None:
        for message, stage in zip(MESSAGES[1:], ["train", None], strict=True):
            time.sleep(pause_s)
            add_event(job_id, message, **({"stage": stage} if stage else {}))
        end_job(job_id, "succeeded")

    thread = threading.Thread(target=later)
    thread.start()
    return thread


def recorded(client: EdgetuneClient) -> list[httpx.Request]:
    requests: list[httpx.Request] = []
    client.http.event_hooks["request"].append(requests.append)
    return requests


def test_wait_follows_the_stream_not_polls(client, api_key) -> None:
    job_id = new_job(api_key)
    add_event(job_id, MESSAGES[0], stage="prepare")
    requests = recorded(client)
    writer = run_job_later(job_id, 0.3)
    seen: list[dict[str, Any]] = []
    job = client.wait(job_id, poll_s=60, timeout_s=30, on_update=seen.append)  # a poll would take 60 s
    writer.join()
    assert (job["id"], job["status"]) == (job_id, "succeeded")
    assert [u["message"] for u in seen[:-1]] == MESSAGES and seen[-1] == job
    assert [r.url.path for r in requests] == [f"/v1/fine_tuning/jobs/{job_id}/events"]
    assert requests[0].url.params["stream"] == "true" and requests[0].headers["accept"] == "text/event-stream"


def test_wait_resumes_with_last_event_id_when_the_stream_ends(client, api_key, monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "event_stream_max_s", 0.4)  # the server cuts every stream
    job_id = new_job(api_key)
    first = add_event(job_id, MESSAGES[0], stage="prepare")
    requests = recorded(client)
    writer = run_job_later(job_id, 0.7)
    seen: list[dict[str, Any]] = []
    job = client.wait(job_id, timeout_s=30, on_update=seen.append)
    writer.join()
    assert job["status"] == "succeeded"
    assert [u["message"] for u in seen[:-1]] == MESSAGES  # each once, in order, across reconnects
    resumed = [r.headers.get("last-event-id") for r in requests]
    assert len(requests) >= 3 and resumed[0] is None and resumed[1] == first
    ids = {u["id"] for u in seen[:-1]}
    assert set(resumed[1:]) <= ids


def test_jobs_get_wait_shows_the_events_on_its_progress_bar(server, api_key, fast_polls, monkeypatch) -> None:
    monkeypatch.setattr("click._termui_impl.isatty", lambda _: True)  # draw the bar, as on a terminal
    job_id = new_job(api_key)
    add_event(job_id, MESSAGES[0], stage="prepare")
    writer = run_job_later(job_id, 0.3)
    env = {"EDGETUNE_API_URL": server.base_url.removesuffix("/v1"), "EDGETUNE_API_KEY": api_key}
    result = CliRunner().invoke(main, ["jobs", "get", job_id, "--wait", "--timeout", "30"], env=env)
    writer.join()
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)["status"] == "succeeded"
    bar = result.stderr
    assert MESSAGES[0] in bar and MESSAGES[1] in bar and "100%" in bar, bar  # each event, then full
    assert bar.index(MESSAGES[0]) < bar.index(MESSAGES[1]) and f"{job_id}: succeeded" in bar


# ---- a stand-in server -------------------------------------------------------------------------


def sse(*frames: tuple[str | None, str, dict[str, Any]]) -> bytes:
    return "".join(
        (f"id: {i}\n" if i else "") + f"event: {e}\ndata: {json.dumps(d)}\n\n" for i, e, d in frames
    ).encode()


def event(n: int) -> tuple[str, str, dict[str, Any]]:
    return f"ev-{n}", "fine_tuning.job.event", {"object": "fine_tuning.job.event", "message": f"m{n}"}


JOB = {"object": "fine_tuning.job", "id": "ftjob-1", "status": "succeeded", "stage": None}
SSE = {"content-type": "text/event-stream"}


class Cut(httpx.SyncByteStream):
    """A body that stops with a transport error after `chunks` (the connection dropped)."""

    def __init__(self, *chunks: bytes, pause_s: float = 0.0, forever: bytes = b"") -> None:
        self.chunks, self.pause_s, self.forever = chunks, pause_s, forever

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        while self.forever:  # a quiet job: keep-alives and nothing else
            time.sleep(self.pause_s)
            yield self.forever
        raise httpx.ReadError("connection reset by peer")


def stand_in(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[EdgetuneClient, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return handler(request)

    return EdgetuneClient("http://api.test", "et-x", transport=httpx.MockTransport(record)), calls


def test_a_connection_cut_mid_frame_resumes_after_the_last_whole_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "last-event-id" not in request.headers:
            half = sse(event(2))[:20]  # the second frame, cut off before its end
            return httpx.Response(200, headers=SSE, stream=Cut(sse(event(1)), half))
        return httpx.Response(200, headers=SSE, content=sse(event(2), (None, "done", JOB)))

    client, calls = stand_in(handler)
    seen: list[dict[str, Any]] = []
    assert client.wait("ftjob-1", on_update=seen.append) == JOB
    assert [u.get("message") for u in seen] == ["m1", "m2", None]
    assert [c.headers.get("last-event-id") for c in calls] == [None, "ev-1"]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, json={"error": {"message": "Not Found", "type": "not_found_error"}}),
        httpx.Response(200, json={"object": "list", "data": [], "has_more": False}),  # ignores stream=true
    ],
)
def test_a_server_without_streams_is_polled(answer: httpx.Response) -> None:
    statuses = iter(["queued", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return answer
        return httpx.Response(200, json=JOB | {"status": next(statuses)})

    client, calls = stand_in(handler)
    seen: list[dict[str, Any]] = []
    job = client.wait("ftjob-1", poll_s=0.01, on_update=seen.append)
    assert job["status"] == "succeeded" and [u["status"] for u in seen] == ["queued", "running", "succeeded"]
    assert [c.url.path for c in calls] == ["/v1/fine_tuning/jobs/ftjob-1/events"] + [
        "/v1/fine_tuning/jobs/ftjob-1"
    ] * 3


def test_a_stream_that_keeps_failing_is_an_error_and_one_too_quiet_a_timeout(monkeypatch) -> None:
    monkeypatch.setattr("cli.client.time.sleep", lambda _: None)  # no back-off waits here

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client, calls = stand_in(refused)
    with pytest.raises(ApiError, match="keeps failing"):
        client.wait("ftjob-1")
    assert len(calls) == 5
    monkeypatch.undo()

    def quiet(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, stream=Cut(forever=b": keep-alive\n\n", pause_s=0.05))

    client, _ = stand_in(quiet)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not end within"):
        client.wait("ftjob-1", timeout_s=0.5)
    assert time.monotonic() - started < 3
