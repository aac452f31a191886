"""A small Python client for the edgetune REST API (httpx), used by the `edgetune jobs|artifacts|api-keys`
verbs. It reads EDGETUNE_API_URL (default http://127.0.0.1:8000) and EDGETUNE_API_KEY.

    client = EdgetuneClient()
    f = client.upload_file(Path("train.jsonl"))
    body = {"model": "LiquidAI/LFM2-350M", "training_file": f["id"], "budget_usd": 5}
    job = client.create_job(body, idempotency_key="run-1")
    job = client.wait(job["id"], on_update=print)
    for a in client.list_artifacts(job["id"])["data"]:
        client.download_artifact(a["id"], Path("out"))
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from infra.settings import DEFAULT_API_URL

TERMINAL = ("succeeded", "failed", "cancelled")


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
        """Poll until the job ends; `on_update` sees every poll. Returns the final job."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout_s:.0f}s")
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
