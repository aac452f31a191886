"""Fairness between orgs: request rates, heavy-work rates and concurrency, and active jobs.

One org must not take the API from the others (issue 19: twenty concurrent plans of one org once
pushed another org's simple reads to 8 s). Every authenticated call — REST, /v1/tools and MCP —
passes `check_rate`; the calls that tokenize files, build models on the meta device, copy uploads
or queue work also take a `heavy_slot` (a second, lower rate and at most N running at once per
org); creates check `check_active_jobs`. Each refusal is a 429 `rate_limit_exceeded` (OpenAI's
code) with Retry-After, so the official SDKs back off and retry on their own.

Rates use the `limits` package's moving window; the counters and the concurrency leases live in
Redis when the broker is Redis (one budget across every API process), else in process memory (the
embedded defaults: one process). The settings are in infra/settings.py.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Protocol

from limits import RateLimitItem, parse, storage, strategies
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from infra.models import Job, Org, SyntheticDataset
from infra.settings import get_settings
from services.errors import RateLimited
from services.spend_budgets import ACTIVE

log = logging.getLogger(__name__)
HEAVY_LEASE_S = 900  # a crashed API process's slot frees itself after this (no heavy call runs longer)
SLOT_RETRY_AFTER_S = 2  # heavy calls take seconds: try again soon


@lru_cache(maxsize=1)
def _limiter(url: str) -> strategies.MovingWindowRateLimiter:
    return strategies.MovingWindowRateLimiter(storage.storage_from_string(url))


@lru_cache(maxsize=8)
def _item(spec: str) -> RateLimitItem:
    return parse(spec)


def _unreachable(what: str, exc: Exception) -> None:
    # Fail open: the counters' store down (Redis, which is also the broker) must not turn every
    # call into an error; a create then meets the queue's own 503, reads go on unmetered.
    log.warning("rate-limit store unreachable (%s), not counting this call: %r", what, exc)


def _hit(spec: str, kind: str, org_id: str) -> None:
    """One call against `spec` for this org; over it, a 429 saying when the window has room."""
    item = _item(spec)
    try:
        limiter = _limiter(get_settings().resolved_rate_limit_storage)
        if limiter.hit(item, kind, org_id):
            return
        reset_at = limiter.get_window_stats(item, kind, org_id).reset_time
    except Exception as exc:  # the store's own errors (redis.ConnectionError, limits' StorageError)
        _unreachable(kind, exc)
        return
    wait = max(1, math.ceil(reset_at - time.time()))
    raise RateLimited(
        f"Rate limit reached for your organization: {spec} {kind} calls. Retry after {wait} s.",
        retry_after=wait,
    )


def check_rate(org: Org) -> None:
    """Every authenticated call."""
    _hit(get_settings().rate_limit, "requests", org.id)


class _Slots(Protocol):
    def acquire(self, key: str, token: str, cap: int) -> bool: ...
    def release(self, key: str, token: str) -> None: ...


class _MemorySlots:
    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, token: str, cap: int) -> bool:
        with self._lock:
            held = self._held.setdefault(key, set())
            if len(held) >= cap:
                return False
            held.add(token)
            return True

    def release(self, key: str, token: str) -> None:
        with self._lock:
            self._held.get(key, set()).discard(token)


class _RedisSlots:
    """Leases in a sorted set scored by expiry: a process that dies holding one loses it after
    HEAVY_LEASE_S. Add-then-count in one transaction; over the cap, the lease is taken back (two
    racing callers at the edge may both be refused, never both admitted past the cap)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    def acquire(self, key: str, token: str, cap: int) -> bool:
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {token: now + HEAVY_LEASE_S})
        pipe.zcard(key)
        pipe.expire(key, HEAVY_LEASE_S)
        held = pipe.execute()[2]
        if held > cap:
            self._redis.zrem(key, token)
            return False
        return True

    def release(self, key: str, token: str) -> None:
        self._redis.zrem(key, token)


@lru_cache(maxsize=1)
def _slots(url: str) -> _Slots:
    return _MemorySlots() if url.startswith("memory://") else _RedisSlots(url)


@contextmanager
def heavy_slot(org: Org) -> Iterator[None]:
    """Around a heavy call: counts against the heavy rate and holds one of the org's
    `max_concurrent_heavy` slots while it runs."""
    s = get_settings()
    _hit(s.heavy_rate_limit, "heavy", org.id)
    slots, key, token = _slots(s.resolved_rate_limit_storage), f"edgetune:heavy:{org.id}", uuid.uuid4().hex
    try:
        admitted = slots.acquire(key, token, s.max_concurrent_heavy)
    except Exception as exc:
        _unreachable("heavy slots", exc)
        yield
        return
    if not admitted:
        raise RateLimited(
            f"Your organization already has {s.max_concurrent_heavy} plans, creates or uploads running "
            f"(EDGETUNE_MAX_CONCURRENT_HEAVY). Retry after {SLOT_RETRY_AFTER_S} s.",
            retry_after=SLOT_RETRY_AFTER_S,
            code="too_many_concurrent_requests",
        )
    try:
        yield
    finally:
        try:
            slots.release(key, token)
        except Exception as exc:  # the lease expires by itself (HEAVY_LEASE_S)
            _unreachable("heavy slot release", exc)


def check_active_jobs(session: Session, org: Org) -> None:
    """A create past the org's cap of queued or running jobs and datasets is a 429: the queue is
    shared, and one org's hundred jobs would sit in front of everyone else's."""
    cap = get_settings().max_active_jobs
    active = sum(
        session.scalar(select(func.count()).where(model.org_id == org.id, model.status.in_(ACTIVE))) or 0
        for model in (Job, SyntheticDataset)
    )
    if active >= cap:
        raise RateLimited(
            f"Your organization has {active} fine-tuning jobs and synthetic datasets queued or running, "
            f"the most it may (EDGETUNE_MAX_ACTIVE_JOBS = {cap}). Retry when one finishes, or cancel one.",
            retry_after=60,
            code="too_many_active_jobs",
        )
