"""A tenant's `teacher.base_url` cannot reach our network (issue 19, item 1), over real HTTP on
PostgreSQL + Redis: a literal internal address is a 400 naming `teacher.base_url` and stores
nothing; a host name that resolves to loopback passes the request but the worker's connect-time
check refuses it, failing the dataset with an error that names no address; an allowed upstream's
error body never reaches the dataset's error.

The dataset's Celery task runs in this process (it is the worker's code, called directly), so the
test can point a host name at 127.0.0.1 without touching the machine's DNS."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from infra import outbound
from infra.settings import get_settings
from tests.synth.fake_teacher import FakeTeacher, Reply, chat
from worker.synth_tasks import run_synthetic_dataset

TASK = {"description": "Classify support tickets by urgency.", "labels": ["urgent", "normal"]}
UPSTREAM_SECRET = "INTERNAL-ONLY-BODY postgres://admin:hunter2@10.0.0.3/prod"


@pytest.fixture()
def api(server, api_key) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture()
def no_allowlist(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The default policy, without the test platform's 127.0.0.1 allowance."""
    monkeypatch.setenv("EDGETUNE_OUTBOUND_ALLOW", "")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8080/v1",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.5/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://0x7f000001:6379/",
        "http://localhost:5432/v1",
    ],
)
def test_a_literal_internal_address_is_a_400_and_stores_nothing(api, no_allowlist, base_url: str) -> None:
    r = api.post("/synthetic_datasets", json={"task": TASK, "teacher": {"base_url": base_url}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "teacher.base_url" and error["code"] == "teacher_url_not_allowed"
    assert "not allowed" in error["message"]
    assert api.get("/synthetic_datasets").json()["data"] == []


def test_a_non_http_scheme_is_a_400_naming_the_field(api) -> None:
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://teacher.example/"):
        r = api.post("/synthetic_datasets", json={"task": TASK, "teacher": {"base_url": url}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "teacher.base_url", r.text


@pytest.mark.parametrize(
    "url",
    ["http://[", "http://[::1/v1", "http://[zz]/v1", "http://\x00/v1", "http://x\u2100y/", "http://t:x/"],
)
def test_a_malformed_url_is_a_400_naming_the_field(api, url: str) -> None:
    # found by the fuzz run (tests/api/test_fuzz.py): urlsplit's and inet_aton's ValueErrors were a 500
    r = api.post("/synthetic_datasets", json={"task": TASK, "teacher": {"base_url": url}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "teacher.base_url" and error["code"] == "teacher_url_not_allowed", error


def _port(teacher: FakeTeacher) -> int:
    return int(teacher.base_url.split(":")[2].split("/")[0])


def _run_in_process(api: httpx.Client, base_url: str) -> dict:  # type: ignore[type-arg]
    r = api.post("/synthetic_datasets", json={"task": TASK, "teacher": {"base_url": base_url}})
    assert r.status_code == 200, r.text
    run_synthetic_dataset(r.json()["id"])
    return api.get(f"/synthetic_datasets/{r.json()['id']}").json()  # type: ignore[no-any-return]


def test_a_name_resolving_to_loopback_is_refused_at_connect_time(api, no_allowlist, monkeypatch) -> None:
    def dns(host: str, port: int) -> list[str]:  # the attacker's DNS: their name, our loopback
        assert host == "teacher.attacker.example"
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "_resolve", dns)
    with FakeTeacher(lambda n, p: chat(UPSTREAM_SECRET)) as internal:
        ds = _run_in_process(api, f"http://teacher.attacker.example:{_port(internal)}/v1")
        assert internal.hits == 0  # nothing reached the internal service
    assert ds["status"] == "failed" and ds["training_file"] is None, ds
    message = ds["error"]["message"]
    assert "teacher.base_url" in message and "not allowed" in message
    assert "127.0.0.1" not in json.dumps(ds) and "INTERNAL-ONLY" not in json.dumps(ds)


@pytest.mark.parametrize("status", [401, 404])
def test_an_allowed_upstreams_error_body_stays_out_of_the_dataset(api, status: int) -> None:
    # The platform allows 127.0.0.1 (tests/conftest.py), as an operator allows its own network.
    with FakeTeacher(lambda n, p: Reply(status, UPSTREAM_SECRET.encode())) as teacher:
        ds = _run_in_process(api, teacher.base_url)
        assert teacher.hits >= 1
    assert ds["status"] == "failed", ds
    assert f"HTTP {status}" in ds["error"]["message"]
    assert "INTERNAL-ONLY" not in json.dumps(ds) and "hunter2" not in json.dumps(ds)
