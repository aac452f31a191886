"""A small client for an OpenAI-compatible teacher (`POST {base_url}/chat/completions`, plain httpx).

What it adds over a bare POST, because synthesis sends hundreds of requests to endpoints that
rate-limit, fail and cost money:

* bounded concurrency (threads; the HTTP call is the only slow part),
* retries of 429 / 5xx / timeouts / connection errors with capped exponential backoff and jitter,
  honouring `Retry-After`,
* a token budget (`max_total_tokens`, or `max_cost_usd` at `usd_per_1k_tokens`, whichever is
  lower): each request reserves its worst case (max_tokens plus an estimate of its prompt) before
  it is sent, so concurrent requests cannot jointly overshoot it,
* cooperative cancel (`should_stop`) checked before every request and during backoff sleeps,
* usage accounting (`TeacherUsage`) for cost.

Failure semantics, in one place:

* `complete` raises: `TeacherBudgetExceeded` when the budget is spent, `TeacherCancelled` when
  `should_stop()` turned true, `TeacherError` for everything else (retries exhausted, a client
  error such as 400/401/404 that no retry can fix, a malformed body).
* `complete_many` never raises for a single request: a failed, cancelled or over-budget request is
  `None` in the result list (the caller counts them). Once the budget is spent or `should_stop()` is
  true it stops issuing new requests, so the rest are `None` too. It raises `TeacherError` only when
  `max_consecutive_failures` requests in a row failed: a dead or misconfigured endpoint should fail
  the job fast instead of being retried for every remaining request.
* A malformed body (bad JSON, no `choices`, no string content) is counted in `usage.malformed` and
  not retried: a server that answers 200 with garbage usually does so deterministically.
* A redirect is an error, never followed: a tenant's teacher must not bounce us to another address.
* `TeacherRefused` (the address is not allowed, see infra/outbound.py) is not retried, and
  `complete_many` raises it at once.

Error messages reach customers (a dataset's or a job's error), so they never carry the upstream's
body nor the teacher's address: a tenant-given address could be an internal service whose answer
must not leak, and the operator's address is internal. Both are logged here for the operator.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, Field

from infra.outbound import OutboundRefused
from infra.settings import StructuredOutput

log = logging.getLogger(__name__)
StopFn = Callable[[], bool]
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _never() -> bool:
    return False


class TeacherError(RuntimeError):
    """The teacher could not answer (retries exhausted, rejected request, malformed response)."""


class TeacherRejected(TeacherError):
    """The teacher answered a client error that no retry can fix (400, 401, 404, 422 ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TeacherBudgetExceeded(TeacherError):
    """The token budget (`max_total_tokens`) is spent; no further requests are sent."""


class TeacherCancelled(TeacherError):
    """`should_stop()` turned true before the request could be sent."""


class TeacherRefused(TeacherError):
    """The teacher's address is one outbound calls may not go to (infra/outbound.py)."""


class TeacherSettings(BaseModel):
    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1.")
    model: str = Field(description="Model name sent with every request.")
    api_key: str | None = Field(default=None, description="Sent as a Bearer token when set.")
    max_concurrency: int = Field(default=2, ge=1, le=64, description="Requests in flight at once.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout (CPU teachers are slow).")
    max_retries: int = Field(default=4, ge=0, le=20, description="Retries after the first attempt.")
    backoff_base_s: float = Field(default=0.5, ge=0, description="First backoff; doubles per retry.")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Cap on one backoff, Retry-After included.")
    max_total_tokens: int | None = Field(default=None, ge=1, description="Token budget; None = unlimited.")
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="Cost budget, spent at usd_per_1k_tokens; None = unlimited."
    )
    usd_per_1k_tokens: float = Field(
        default=0.0, ge=0, description="Teacher price per 1,000 prompt + completion tokens (0 = free)."
    )
    max_consecutive_failures: int = Field(default=8, ge=1, description="complete_many gives up after this.")
    temperature: float = Field(default=0.8, ge=0, le=2)
    structured_output: StructuredOutput = Field(
        default="json_schema",
        description="How a request that needs an answer of a JSON Schema says so (domain/lists.py).",
    )

    @property
    def token_limit(self) -> int | None:
        """The token budget in force: max_total_tokens, or what max_cost_usd buys at the price if
        that is lower ($0.50 at $0.0002 per 1k tokens buys 2,500,000 tokens)."""
        limits = [self.max_total_tokens] if self.max_total_tokens is not None else []
        if self.max_cost_usd is not None and self.usd_per_1k_tokens > 0:
            # + 1e-6: 0.0007 / 0.002 * 1000 is 349.99999999999994 in floating point, and is 350
            limits.append(int(self.max_cost_usd / self.usd_per_1k_tokens * 1000 + 1e-6))
        return min(limits) if limits else None


@dataclass
class TeacherUsage:
    """What the teacher cost so far. `requests` counts HTTP attempts (retries included)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    failed: int = 0  # logical requests that ended in TeacherError (not cancel/budget)
    malformed: int = 0  # 200 responses whose body could not be read as a chat completion

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float | None = None
    seed: int | None = None
    # The JSON Schema the answer must match, sent as the teacher's settings say (response_format)
    answer_schema: dict[str, Any] | None = None


def response_format(dialect: StructuredOutput, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` field that asks a teacher of this dialect for an answer of `schema`."""
    if dialect == "json_schema":
        # OpenAI's structured outputs. Not `strict`: strict mode refuses a schema with an optional
        # key or without additionalProperties false, and a customer's extraction schema may have both.
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if dialect == "json_object":  # llama-cpp-python's server compiles the schema into a grammar
        return {"type": "json_object", "schema": schema}
    return None


@dataclass
class _Budget:
    """Tokens spent plus tokens reserved by requests in flight (their max_tokens)."""

    limit: int | None
    reserved: int = 0
    hit: bool = False  # a request was refused: the rest of the budget is too small for one more
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A slightly high guess of a prompt's size before the server counts it: ~3 characters per
    token (English BPE averages ~4) plus a few template tokens per message."""
    return sum(len(m.get("content") or "") for m in messages) // 3 + 4 * len(messages)


def parse_completion(body: bytes) -> tuple[str, int, int]:
    """(content, prompt_tokens, completion_tokens) from a chat-completions body; ValueError if malformed."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"response is not JSON ({exc})") from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("response has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError("choices[0].message.content is missing or not a string")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    # Servers that omit usage still cost something: estimate ~4 characters per token.
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        content,
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else max(1, len(content) // 4),
    )


class TeacherClient:
    """Thread-safe; one instance per synthesis run (its `usage` is that run's cost)."""

    def __init__(
        self,
        settings: TeacherSettings,
        *,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport`: e.g. infra.outbound.GuardedTransport for a tenant-given address (it then
        carries the connection limit)."""
        self.settings = settings
        self.usage = TeacherUsage()
        # the server refused the response_format it was sent: answers are asked by the prompt alone
        self.structured_output_refused = False
        self._lock = threading.Lock()
        self._budget = _Budget(settings.token_limit)
        self._rng = rng or random.Random()  # jitter only; seeded in tests for stable timings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = httpx.Client(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=settings.max_concurrency),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TeacherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cost_usd(self) -> float:
        """What the tokens used so far cost at `usd_per_1k_tokens`."""
        return self.usage.total_tokens * self.settings.usd_per_1k_tokens / 1000

    @property
    def budget_exhausted(self) -> bool:
        limit = self._budget.limit
        return limit is not None and (self._budget.hit or self.usage.total_tokens >= limit)

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float | None = None,
        seed: int | None = None,
        *,
        answer_schema: dict[str, Any] | None = None,
        should_stop: StopFn = _never,
    ) -> str:
        """One chat completion's text. Raises TeacherError (or its subclasses, see module doc)."""
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.settings.temperature if temperature is None else temperature,
        }
        if seed is not None:
            payload["seed"] = seed
        form = answer_schema and response_format(self.settings.structured_output, answer_schema)
        if form and not self.structured_output_refused:
            payload["response_format"] = form
        cost = max_tokens + estimate_prompt_tokens(messages)
        self._reserve(cost)
        try:
            body = self._post_answer(payload, should_stop)
        except TeacherError as exc:
            if not isinstance(exc, TeacherCancelled | TeacherBudgetExceeded):
                self._count(failed=1)
            raise
        finally:
            self._release(cost)
        try:
            content, prompt_tokens, completion_tokens = parse_completion(body)
        except ValueError as exc:
            self._count(malformed=1, failed=1)
            raise TeacherError(f"teacher returned a malformed response: {exc}") from exc
        self._count(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return content

    def _post_answer(self, payload: dict[str, Any], should_stop: StopFn) -> bytes:
        """Post, and when a server refuses the response_format it was sent (a 400 or 422: it reads
        another form, as llama-cpp-python's refuses OpenAI's json_schema), ask again by the prompt
        alone, and so for the rest of the run (`structured_output_refused`, in the report)."""
        try:
            return self._post_with_retries(payload, should_stop)
        except TeacherRejected as exc:
            if "response_format" not in payload or exc.status not in (400, 422):
                raise
            log.warning("teacher refused response_format (%s): asking by the prompt alone", exc)
            self.structured_output_refused = True
            plain = {k: v for k, v in payload.items() if k != "response_format"}
            return self._post_with_retries(plain, should_stop)

    def complete_many(
        self, requests: Sequence[ChatRequest], should_stop: StopFn = _never
    ) -> list[str | None]:
        """Run `requests` with at most `max_concurrency` in flight; results in input order.

        A request that failed, was cancelled or hit the budget is None (see module doc). In-flight
        requests are allowed to finish when stopping (an HTTP call cannot be abandoned cleanly).
        """
        results: list[str | None] = [None] * len(requests)
        todo = iter(enumerate(requests))
        in_flight: dict[Future[str], int] = {}
        failures_in_a_row, last_error = 0, ""
        with ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="teacher") as pool:
            while True:
                while len(in_flight) < self.settings.max_concurrency and not self._halted(should_stop):
                    item = next(todo, None)
                    if item is None:
                        break
                    i, req = item
                    in_flight[pool.submit(self._complete_request, req, should_stop)] = i
                if not in_flight:
                    return results
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = in_flight.pop(fut)
                    try:
                        results[i] = fut.result()
                        failures_in_a_row = 0
                    except (TeacherCancelled, TeacherBudgetExceeded):
                        pass
                    except TeacherRefused:
                        for other in in_flight:
                            other.cancel()
                        raise
                    except TeacherError as exc:
                        failures_in_a_row, last_error = failures_in_a_row + 1, str(exc)
                if failures_in_a_row >= self.settings.max_consecutive_failures:
                    for fut in in_flight:
                        fut.cancel()
                    raise TeacherError(
                        f"the teacher failed {failures_in_a_row} requests in a row; last error: {last_error}"
                    )

    def _complete_request(self, req: ChatRequest, should_stop: StopFn) -> str:
        return self.complete(
            req.messages, req.max_tokens, req.temperature, req.seed,
            answer_schema=req.answer_schema, should_stop=should_stop,
        )  # fmt: skip

    def _halted(self, should_stop: StopFn) -> bool:
        return should_stop() or self.budget_exhausted

    def _reserve(self, cost: int) -> None:
        # Reserve a request's worst case before sending it, so concurrent requests cannot jointly
        # overshoot the budget: it is then exceeded only by how far the prompt estimate is off.
        with self._budget.lock:
            limit = self._budget.limit
            if limit is not None and self.usage.total_tokens + self._budget.reserved + cost > limit:
                self._budget.hit = True
                usd = self.settings.max_cost_usd
                bought = "" if limit == self.settings.max_total_tokens else f", max_cost_usd {usd:g}"
                raise TeacherBudgetExceeded(
                    f"teacher token budget of {limit} spent ({self.usage.total_tokens} used{bought})"
                )
            self._budget.reserved += cost

    def _release(self, cost: int) -> None:
        with self._budget.lock:
            self._budget.reserved -= cost

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.usage, name, getattr(self.usage, name) + delta)

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half fixed, half random, so retries from concurrent workers spread out
        # but never retry immediately.
        delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt)
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def _post_with_retries(self, payload: dict[str, Any], should_stop: StopFn) -> bytes:
        attempts = self.settings.max_retries + 1
        error = ""
        for attempt in range(attempts):
            if should_stop():
                raise TeacherCancelled("synthesis was cancelled")
            self._count(requests=1)
            try:
                resp = self._http.post("/chat/completions", json=payload)
            except OutboundRefused as exc:
                log.warning("teacher at %s refused: %s", self.settings.base_url, exc)
                raise TeacherRefused(f"teacher.base_url: {exc}") from None
            except httpx.TimeoutException:
                error, delay = f"timed out after {self.settings.timeout_s:g}s", self._backoff(attempt)
            except httpx.TransportError as exc:
                error, delay = f"connection failed ({exc!r})", self._backoff(attempt)
            else:
                if resp.is_redirect:
                    code = resp.status_code
                    raise TeacherError(f"the teacher answered a redirect (HTTP {code}): not followed")
                if resp.status_code < 400:
                    return resp.content
                error = _describe(resp)
                if resp.status_code not in RETRYABLE_STATUS:
                    raise TeacherRejected(f"teacher rejected the request ({error})", resp.status_code)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                delay = self._backoff(attempt) if retry_after is None else retry_after
            if attempt + 1 < attempts:
                self._count(retries=1)
                _sleep(min(delay, self.settings.backoff_max_s), should_stop)
        raise TeacherError(f"the teacher failed after {attempts} attempts; last error: {error}")


def _describe(resp: httpx.Response) -> str:
    """An error status for the customer: the code and its standard phrase, never the body (logged)."""
    log.warning("teacher at %s answered HTTP %s: %.300r", resp.request.url, resp.status_code, resp.text)
    phrase = httpx.codes.get_reason_phrase(resp.status_code)
    return f"HTTP {resp.status_code}" + (f" {phrase}" if phrase else "")


def _sleep(seconds: float, should_stop: StopFn) -> None:
    """Sleep, waking every 0.1 s to honour a cancel (the next attempt then raises TeacherCancelled)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not should_stop():
        time.sleep(min(0.1, left))
