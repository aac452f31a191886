"""A small Python client for the edgetune REST API (httpx), used by the `edgetune jobs|artifacts|api-keys`
verbs. It reads EDGETUNE_API_URL (default http://127.0.0.1:8000) and EDGETUNE_API_KEY.

    client = EdgetuneClient()
    f = client.upload_file(Path("train.jsonl"))
    body = {"model": "LiquidAI/LFM2-350M", "training_file": f["id"], "budget_usd": 5}
    job = client.create_job(body, idempotency_key="run-1")
    job = client.wait(job["id"], on_update=print)  # each event as it happens, then the job
    for a in client.list_artifacts(job["id"])["data"]:
        client.download_artifact(a["id"], Path("out"))
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.settings import DEFAULT_API_URL

TERMINAL = ("succeeded", "failed", "cancelled")
# A stream's server sends a keep-alive every 15 s of silence (EDGETUNE_EVENT_STREAM_KEEPALIVE_S):
# this long with not a byte means the connection is gone, and the client reconnects.
STREAM_READ_TIMEOUT_S = 60.0
# Answers that mean "this server has no event stream here" (an older server): poll instead. A job
# that does not exist is a 404 too; the poll's GET then reports that as usual.
NO_STREAM_STATUSES = (404, 405, 406)
RETRY_STATUSES = (502, 503, 504)  # a proxy or the database down for a moment: reconnect, back off
RECONNECT_TRIES = 5  # connections in a row that got nothing before the wait gives up


class ApiError(Exception):
    """An error answer from the API, in OpenAI's shape: message, and the param and code it names."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def __str__(self) -> str:
        named = ", ".join(f"{k}: {v}" for k, v in (("param", self.param), ("code", self.code)) if v)
        return f"{self.status} {self.message}" + (f" ({named})" if named else "")


class EdgetuneClient:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = (base_url or os.environ.get("EDGETUNE_API_URL") or DEFAULT_API_URL).rstrip("/")
        api_key = api_key or os.environ.get("EDGETUNE_API_KEY")
        if not api_key:
            raise ApiError(0, "no API key: set EDGETUNE_API_KEY (from `edgetune keys create`)", "api_key")
        self.http = httpx.Client(
            base_url=f"{base_url}/v1",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _checked(self.http.request(method, path, **kwargs)).json()

    # files and jobs

    def upload_file(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as fh:
            return dict(
                self._json("POST", "/files", files={"file": (path.name, fh)}, data={"purpose": "fine-tune"})
            )

    def plan_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/fine_tuning/jobs/plan", json=body))

    def create_job(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json("POST", "/fine_tuning/jobs", json=body, headers=headers))

    def list_jobs(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return dict(self._json("GET", "/fine_tuning/jobs", params=params))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/fine_tuning/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/fine_tuning/jobs/{job_id}/cancel"))

    def list_events(self, job_id: str, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """Newest first, as OpenAI lists them."""
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return dict(self._json("GET", f"/fine_tuning/jobs/{job_id}/events", params=params))

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follow the job's event stream until it ends; returns the final job. `on_update` sees
        each event as it arrives (`object` "fine_tuning.job.event", oldest first), then the final
        job (`object` "fine_tuning.job"). A dropped stream is resumed after the last event seen
        (Last-Event-ID). Against a server without event streams the job is polled every `poll_s`
        instead, and `on_update` sees the job at each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        follower = _StreamFollower(self.http, f"/fine_tuning/jobs/{job_id}/events", deadline, on_update)
        try:
            job = follower.follow()  # None: the server has no event stream
            return job if job is not None else self._poll(job_id, poll_s, deadline, on_update)
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not end within {timeout_s:.0f}s") from None

    def _poll(
        self,
        job_id: str,
        poll_s: float,
        deadline: float | None,
        on_update: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(poll_s)

    # API keys: the org's own, managed with any of its keys

    def create_api_key(self, name: str, expires_in_days: float | None = None) -> dict[str, Any]:
        """A new key: the answer's `key` is its secret, shown this once."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return dict(self._json("POST", "/api_keys", json=body))

    def list_api_keys(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return dict(self._json("GET", "/api_keys", params=params))

    def get_api_key(self, key_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api_keys/{key_id}"))

    def revoke_api_key(self, key_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/api_keys/{key_id}"))

    def rotate_api_key(
        self, key_id: str, grace_period_seconds: int = 0, expires_in_days: float | None = None
    ) -> dict[str, Any]:
        """A new key replacing `key_id`, which stops working after `grace_period_seconds`."""
        body: dict[str, Any] = {"grace_period_seconds": grace_period_seconds}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return dict(self._json("POST", f"/api_keys/{key_id}/rotate", json=body))

    # artifacts

    def list_artifacts(self, job_id: str | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"job_id": job_id} if job_id else {})
        return dict(self._json("GET", "/artifacts", params=params))

    def get_artifact(self, artifact_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/artifacts/{artifact_id}"))

    def download_artifact(
        self, artifact_id: str, dest_dir: Path, on_bytes: Callable[[int], None] | None = None
    ) -> Path:
        """Stream one artifact to dest_dir/<filename> and check its sha256; a mismatch deletes it.
        A presigned URL (S3 stores) is fetched directly, without the key; else the API streams it."""
        a = self.get_artifact(artifact_id)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest, partial = dest_dir / a["filename"], dest_dir / (a["filename"] + ".partial")
        request = (
            httpx.Request("GET", a["download_url"])
            if a.get("download_url")
            else self.http.build_request("GET", f"/artifacts/{artifact_id}/content")
        )
        digest = hashlib.sha256()
        resp = self.http.send(request, stream=True)
        try:
            _checked(resp)
            with partial.open("wb") as fh:
                for chunk in resp.iter_bytes(1024 * 1024):
                    fh.write(chunk)
                    digest.update(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
        finally:
            resp.close()
        if digest.hexdigest() != a["sha256"]:
            partial.unlink()
            raise ApiError(0, f"{a['filename']}: sha256 {digest.hexdigest()} is not {a['sha256']}", "sha256")
        return partial.replace(dest)


def _checked(resp: httpx.Response) -> httpx.Response:
    if resp.is_success:
        return resp
    resp.read()  # a streamed error body is not read yet
    try:
        err = resp.json().get("error") or {}
    except ValueError:
        err = {"message": resp.text[:500]}
    raise ApiError(resp.status_code, str(err.get("message")), err.get("param"), err.get("code"))


# ---- Server-Sent Events ---------------------------------------------------------------------------


@dataclass
class SseFrame:
    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterable[str]) -> Iterator[SseFrame | None]:
    """Frames as the SSE spec reads them (field lines up to a blank line; `data` lines joined by
    newlines); None for each comment line, so a reader sees keep-alives go by."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SseFrame(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value  # the spec keeps the last id across frames until another is sent


class _NoStream(Exception):
    """The server answered the stream with a status that means it has none (an older server)."""


class _StreamFollower:
    """One resource's event stream, followed across reconnects to its `done` frame."""

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        deadline: float | None,
        on_update: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.http, self.path, self.deadline, self.on_update = http, path, deadline, on_update
        self.last_id: str | None = None
        self.heard = False  # this connection brought at least a line

    def follow(self) -> dict[str, Any] | None:
        """The `done` frame's data, or None when the server has no stream here (poll instead).
        Raises TimeoutError past the deadline, ApiError for an error answer or for a stream that
        keeps failing before a single line arrives."""
        failures = 0
        while True:
            self._check_deadline()
            self.heard = False
            try:
                done = self._connect()
                if done is not None:
                    return done
                problem = "it ended"  # the server's lifetime bound, or a 502-504: resume
            except _NoStream:
                return None
            except httpx.TransportError as exc:
                problem = repr(exc)
            failures = 0 if self.heard else failures + 1
            if failures >= RECONNECT_TRIES:
                raise ApiError(0, f"the event stream {self.path} keeps failing: {problem}")
            time.sleep(min(0.5 * 2**failures, 10.0) if failures else 0.1)

    def _connect(self) -> dict[str, Any] | None:
        """One connection: the `done` frame's data, or None when it ended before `done`."""
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": self.last_id} if self.last_id else {})
        timeout = httpx.Timeout(30.0, read=self._read_timeout())
        with self.http.stream(
            "GET", self.path, params={"stream": "true"}, headers=headers, timeout=timeout
        ) as resp:
            streams = resp.headers.get("content-type", "").startswith("text/event-stream")
            if resp.status_code in NO_STREAM_STATUSES or (resp.is_success and not streams):
                raise _NoStream
            if resp.status_code in RETRY_STATUSES:
                return None
            _checked(resp)
            for frame in parse_sse(self._lines(resp)):
                if frame is None:
                    continue
                item = dict(json.loads(frame.data))
                if self.on_update:
                    self.on_update(item)
                if frame.event == "done":
                    return item
                self.last_id = frame.id
        return None

    def _lines(self, resp: httpx.Response) -> Iterator[str]:
        for line in resp.iter_lines():
            self.heard = True
            self._check_deadline()  # keep-alives come every 15 s, so a quiet job is checked too
            yield line

    def _read_timeout(self) -> float:
        if self.deadline is None:
            return STREAM_READ_TIMEOUT_S
        return max(0.1, min(STREAM_READ_TIMEOUT_S, self.deadline - time.monotonic() + 0.1))

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError
