"""TeacherClient against a scripted local HTTP server: retries, Retry-After, budget, cancel, errors."""

from __future__ import annotations

import random
import threading
import time
from email.utils import formatdate

import pytest

from synth.teacher import (
    ChatRequest,
    TeacherBudgetExceeded,
    TeacherCancelled,
    TeacherClient,
    TeacherError,
    TeacherSettings,
    parse_completion,
    parse_retry_after,
)
from tests.synth.fake_teacher import FakeTeacher, Reply, chat

MSGS = [{"role": "user", "content": "hi"}]


def client_for(fake: FakeTeacher, **overrides: object) -> TeacherClient:
    settings = {"base_url": fake.base_url, "model": "fake-model", "backoff_base_s": 0.01, **overrides}
    return TeacherClient(TeacherSettings.model_validate(settings), rng=random.Random(0))


def requests(n: int, max_tokens: int = 20) -> list[ChatRequest]:
    return [ChatRequest(MSGS, max_tokens, seed=i) for i in range(n)]


def test_sends_openai_payload_and_counts_usage() -> None:
    with FakeTeacher(lambda n, p: chat("hello", 7, 3)) as fake, client_for(fake, api_key="sk-test") as c:
        assert c.complete(MSGS, max_tokens=12, temperature=0.1, seed=5) == "hello"
        c.complete(MSGS, max_tokens=12)
    first, second = fake.seen[0], fake.seen[1]
    assert first.payload["model"] == "fake-model"
    assert first.payload["messages"] == MSGS
    assert (first.payload["max_tokens"], first.payload["temperature"], first.payload["seed"]) == (12, 0.1, 5)
    assert "seed" not in second.payload and second.payload["temperature"] == 0.8  # settings default
    assert first.headers["Authorization"] == "Bearer sk-test"
    assert c.usage.as_dict() == {
        "prompt_tokens": 14,
        "completion_tokens": 6,
        "requests": 2,
        "retries": 0,
        "failed": 0,
        "malformed": 0,
        "total_tokens": 20,
    }


def test_429_with_retry_after_is_retried_after_the_delay() -> None:
    def script(n: int, payload: dict) -> Reply:
        return Reply(429, b'{"error": "slow down"}', {"Retry-After": "1"}) if n == 0 else chat("ok")

    with FakeTeacher(script) as fake, client_for(fake) as c:
        assert c.complete(MSGS, max_tokens=8) == "ok"
    assert fake.hits == 2
    waited = fake.seen[1].at - fake.seen[0].at
    assert 0.95 <= waited < 3.0  # honoured Retry-After (backoff alone would be ~0.01 s)
    assert (c.usage.requests, c.usage.retries, c.usage.failed) == (2, 1, 0)


def test_5xx_until_retries_are_exhausted_raises_teacher_error() -> None:
    with FakeTeacher(lambda n, p: Reply(503, b"overloaded")) as fake, client_for(fake, max_retries=2) as c:
        with pytest.raises(
            TeacherError, match=r"failed after 3 attempts.*HTTP 503 Service Unavailable"
        ) as err:
            c.complete(MSGS, max_tokens=8)
    assert "overloaded" not in str(err.value)  # the upstream's body never reaches a customer
    assert fake.hits == 3
    assert (c.usage.requests, c.usage.retries, c.usage.failed) == (3, 2, 1)
    assert c.usage.total_tokens == 0


def test_backoff_grows_exponentially() -> None:
    with (
        FakeTeacher(lambda n, p: Reply(500)) as fake,
        client_for(fake, max_retries=3, backoff_base_s=0.1) as c,
    ):
        with pytest.raises(TeacherError):
            c.complete(MSGS, max_tokens=8)
    gaps = [b.at - a.at for a, b in zip(fake.seen, fake.seen[1:], strict=False)]
    # Equal jitter: attempt k waits between base*2^k/2 and base*2^k.
    for k, gap in enumerate(gaps):
        assert 0.1 * 2**k / 2 - 0.02 <= gap <= 0.1 * 2**k + 0.25, gaps


def test_timeout_is_retried() -> None:
    def script(n: int, payload: dict) -> Reply:
        return chat("late", delay_s=1.0) if n == 0 else chat("on time")

    with FakeTeacher(script) as fake, client_for(fake, timeout_s=0.3) as c:
        assert c.complete(MSGS, max_tokens=8) == "on time"
    assert fake.hits == 2 and c.usage.retries == 1


def test_client_error_is_not_retried() -> None:
    with FakeTeacher(lambda n, p: Reply(400, b'{"error": "bad model"}')) as fake, client_for(fake) as c:
        with pytest.raises(TeacherError, match="rejected the request.*HTTP 400"):
            c.complete(MSGS, max_tokens=8)
    assert fake.hits == 1


@pytest.mark.parametrize(
    "body", [b"<html>gateway</html>", b'{"choices": []}', b'{"choices": [{"message": {"content": null}}]}']
)
def test_malformed_response_is_a_counted_error(body: bytes) -> None:
    with FakeTeacher(lambda n, p: Reply(200, body)) as fake, client_for(fake) as c:
        with pytest.raises(TeacherError, match="malformed response"):
            c.complete(MSGS, max_tokens=8)
    assert fake.hits == 1  # not retried
    assert (c.usage.malformed, c.usage.failed) == (1, 1)


def test_complete_many_marks_malformed_as_none_and_keeps_going() -> None:
    # Every third reply is garbage: 4 of 12 fail, never 8 in a row, so no TeacherError.
    def script(n: int, payload: dict) -> Reply:
        return Reply(200, b"not json") if payload["seed"] % 3 == 0 else chat(f"text {payload['seed']}")

    with FakeTeacher(script) as fake, client_for(fake) as c:
        out = c.complete_many(requests(12))
    assert [o is None for o in out] == [i % 3 == 0 for i in range(12)]
    assert out[1] == "text 1"  # results stay in input order
    assert c.usage.malformed == 4 and fake.hits == 12


def test_complete_many_bounds_concurrency() -> None:
    with FakeTeacher(lambda n, p: chat("x", delay_s=0.15)) as fake, client_for(fake, max_concurrency=3) as c:
        out = c.complete_many(requests(9))
    assert all(o == "x" for o in out)
    assert 2 <= fake.max_in_flight <= 3


def test_complete_many_gives_up_on_a_dead_endpoint() -> None:
    with (
        FakeTeacher(lambda n, p: Reply(500)) as fake,
        client_for(fake, max_retries=0, max_consecutive_failures=3, max_concurrency=1) as c,
    ):
        with pytest.raises(TeacherError, match="failed 3 requests in a row"):
            c.complete_many(requests(20))
    assert fake.hits == 3


def test_token_budget_stops_further_requests() -> None:
    # Each reply costs 100 tokens; a request reserves max_tokens + its estimated prompt (20 + 4)
    # before it is sent. After 3 replies (300 used) a 4th fits (324 <= 350); after 4, nothing does.
    with (
        FakeTeacher(lambda n, p: chat("x", 80, 20)) as fake,
        client_for(fake, max_total_tokens=350, max_concurrency=1) as c,
    ):
        out = c.complete_many(requests(10))
        assert [o is not None for o in out] == [True] * 4 + [False] * 6
        assert fake.hits == 4 and c.budget_exhausted
        with pytest.raises(TeacherBudgetExceeded, match="budget of 350 spent"):
            c.complete(MSGS, max_tokens=20)
    assert fake.hits == 4


@pytest.mark.parametrize(("budget", "served"), [(100, 4), (130, 5)])
def test_token_budget_holds_with_concurrent_requests(budget: int, served: int) -> None:
    # 4 workers; each request costs 4 + 20 = 24 tokens, exactly what it reserves. Without the
    # reservation all 4 workers would pass the "budget left?" check together and overshoot it.
    with (
        FakeTeacher(lambda n, p: chat("x", 4, 20, delay_s=0.05)) as fake,
        client_for(fake, max_total_tokens=budget, max_concurrency=4) as c,
    ):
        out = c.complete_many(requests(20))
    assert fake.hits == served == sum(o is not None for o in out)
    assert c.usage.total_tokens <= budget


def test_should_stop_cancels_a_running_complete_many() -> None:
    stop = threading.Event()

    def script(n: int, payload: dict) -> Reply:
        if n == 4:
            stop.set()
        return chat("x", delay_s=0.05)

    with FakeTeacher(script) as fake, client_for(fake, max_concurrency=2) as c:
        started = time.monotonic()
        out = c.complete_many(requests(200), should_stop=stop.is_set)
        elapsed = time.monotonic() - started
    served = sum(o is not None for o in out)
    assert fake.hits <= 5 + 2  # at most the requests already in flight when stop turned true
    assert 5 <= served <= fake.hits
    assert elapsed < 2.0


def test_should_stop_interrupts_a_backoff_sleep() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with FakeTeacher(lambda n, p: Reply(429, headers={"Retry-After": "20"})) as fake, client_for(fake) as c:
        started = time.monotonic()
        with pytest.raises(TeacherCancelled):
            c.complete(MSGS, max_tokens=8, should_stop=stop.is_set)
    assert time.monotonic() - started < 2.0
    assert fake.hits == 1 and c.usage.failed == 0


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    delay = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert delay is not None and 25 <= delay <= 31


def test_parse_completion_estimates_missing_usage() -> None:
    text, prompt, completion = parse_completion(b'{"choices": [{"message": {"content": "12345678"}}]}')
    assert (text, prompt, completion) == ("12345678", 0, 2)


def test_dropped_connection_is_retried_then_fails_cleanly() -> None:
    def script(n: int, payload: dict) -> Reply:
        return Reply(drop=True) if n == 0 else chat("back")

    with FakeTeacher(script) as fake, client_for(fake) as c:
        assert c.complete(MSGS, max_tokens=8) == "back"
    assert fake.hits == 2 and c.usage.retries == 1
    with FakeTeacher(lambda n, p: Reply(drop=True)) as fake, client_for(fake, max_retries=1) as c:
        with pytest.raises(TeacherError, match=r"failed after 2 attempts; last error: connection failed"):
            c.complete(MSGS, max_tokens=8)
    assert (c.usage.failed, c.usage.total_tokens) == (1, 0)


def test_cost_budget_stops_like_the_token_budget() -> None:
    # $0.0007 at $0.002 per 1k tokens buys 350 tokens: the same 4 replies as the token-budget test.
    with (
        FakeTeacher(lambda n, p: chat("x", 80, 20)) as fake,
        client_for(fake, max_cost_usd=0.0007, usd_per_1k_tokens=0.002, max_concurrency=1) as c,
    ):
        assert c.settings.token_limit == 350
        out = c.complete_many(requests(10))
        assert sum(o is not None for o in out) == 4 and fake.hits == 4
        assert c.cost_usd == pytest.approx(400 * 0.002 / 1000)
        with pytest.raises(
            TeacherBudgetExceeded, match=r"budget of 350 spent \(400 used, max_cost_usd 0.0007\)"
        ):
            c.complete(MSGS, max_tokens=20)


def test_the_lower_of_token_and_cost_budgets_applies() -> None:
    base = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert (
        TeacherSettings(**base, max_total_tokens=100, max_cost_usd=1.0, usd_per_1k_tokens=1.0).token_limit
        == 100
    )
    assert (
        TeacherSettings(**base, max_total_tokens=5000, max_cost_usd=1.0, usd_per_1k_tokens=1.0).token_limit
        == 1000
    )
    assert TeacherSettings(**base, max_cost_usd=1.0).token_limit is None  # a free teacher has no cost cap
