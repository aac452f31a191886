"""The outbound guard (infra/outbound.py) on its own and inside the teacher client: which addresses
are refused, that the check runs on the resolved address at connect time and the connection goes to
exactly that address, that redirects are not followed, and that no upstream body reaches an error.
A real local server (tests/synth/fake_teacher.py) stands in for the internal service."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from infra.outbound import (
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    check_url,
    is_public,
    resolve_allowed,
)
from synth.teacher import TeacherClient, TeacherError, TeacherRefused, TeacherSettings
from tests.synth.fake_teacher import FakeTeacher, Reply, chat

MSGS = [{"role": "user", "content": "hi"}]
NO_ALLOW = OutboundPolicy()
INTERNAL = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # AWS / GCP / Azure metadata
    "100.100.100.200",  # Alibaba metadata (CGNAT range)
    "100.64.0.1",
    "192.0.0.192",  # Oracle metadata
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS IPv6 metadata
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    with pytest.raises(OutboundRefused):
        resolve_allowed("teacher.example", 443, NO_ALLOW, resolver=lambda h, p: [address])


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
    assert resolve_allowed("teacher.example", 443, NO_ALLOW, resolver=lambda h, p: [address]) == [address]


def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    with pytest.raises(OutboundRefused):
        resolve_allowed("mixed.example", 443, NO_ALLOW, resolver=lambda h, p: ["8.8.8.8", "10.0.0.1"])


def test_operator_allowlist_of_networks_and_hosts() -> None:
    policy = OutboundPolicy.parse(" 10.0.0.0/8, 127.0.0.1 ,fd00::/8, vLLM.Internal. ,")
    assert resolve_allowed("a", 80, policy, resolver=lambda h, p: ["10.9.9.9"]) == ["10.9.9.9"]
    assert resolve_allowed("a", 80, policy, resolver=lambda h, p: ["fd12::1"]) == ["fd12::1"]
    assert resolve_allowed("vllm.internal", 80, policy, resolver=lambda h, p: ["192.168.0.7"]) == [
        "192.168.0.7"
    ]
    for still_refused in ("127.0.0.2", "169.254.169.254", "192.168.0.7"):
        with pytest.raises(OutboundRefused):
            resolve_allowed("a", 80, policy, resolver=lambda h, p, a=still_refused: [a])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/v1",
        "http://[::1]:8080/v1",
        "http://[::ffff:169.254.169.254]/",
        "http://2130706433/v1",  # 127.0.0.1 as one number
        "http://0x7f.1/v1",
        "http://127.1/v1",
        "http://localhost:8080/v1",
        "http://api.localhost/v1",
        "ftp://teacher.example/v1",
        "file:///etc/passwd",
        "http:///v1",
    ],
)
def test_request_time_check_refuses_literal_internal_addresses_and_other_schemes(url: str) -> None:
    with pytest.raises(OutboundRefused, match="teacher.base_url"):
        check_url(url, NO_ALLOW, "teacher.base_url")


def test_request_time_check_leaves_host_names_to_connect_time() -> None:
    check_url("https://api.teacher.example/v1", NO_ALLOW, "teacher.base_url")
    check_url("http://127.0.0.1:8080/v1", OutboundPolicy.parse("127.0.0.1"), "teacher.base_url")


def _client(base_url: str, policy: OutboundPolicy, resolver=None, **kw) -> TeacherClient:  # type: ignore[no-untyped-def]
    settings = TeacherSettings(base_url=base_url, model="m", max_retries=kw.pop("max_retries", 0), **kw)
    transport_kw = {"resolver": resolver} if resolver else {}
    return TeacherClient(settings, transport=GuardedTransport(policy, **transport_kw))


def test_a_name_resolving_to_loopback_is_refused_before_any_connection() -> None:
    with FakeTeacher(lambda n, p: chat("secret internal answer")) as fake:
        port = fake.base_url.split(":")[2].split("/")[0]
        # "localhost" resolves to loopback through the system resolver, as an attacker's DNS name would
        with _client(f"http://localhost:{port}/v1", NO_ALLOW) as c:
            with pytest.raises(TeacherRefused, match="teacher.base_url") as err:
                c.complete(MSGS, max_tokens=8)
        assert fake.hits == 0
    assert "127.0.0.1" not in str(err.value) and "secret" not in str(err.value)
    assert c.usage.requests == 1 and c.usage.retries == 0  # refused once, not retried


def test_dns_rebinding_gains_nothing_the_checked_address_is_the_one_connected_to() -> None:
    """A resolver that answers differently on every lookup: the guard looks up once per connection
    and hands the connection the checked IP. `rebind.example` resolves nowhere else, so the first
    request reaching the server proves no second lookup happened."""
    with FakeTeacher(lambda n, p: chat("ok")) as fake:
        port = int(fake.base_url.split(":")[2].split("/")[0])
        answers = iter(["127.0.0.1", "10.0.0.1"])
        lookups: list[str] = []

        def rebinding(host: str, p: int) -> list[str]:
            lookups.append(host)
            return [next(answers)]

        transport = GuardedTransport(OutboundPolicy.parse("127.0.0.1/32"), resolver=rebinding)
        with httpx.Client(transport=transport, base_url=f"http://rebind.example:{port}") as http:
            r = http.post("/v1/chat/completions", json={}, headers={"Connection": "close"})
            assert r.status_code == 200 and lookups == ["rebind.example"]
            assert fake.seen[0].headers.get("Host") == f"rebind.example:{port}"  # still the name
            # The next connection looks the name up again and gets the internal answer: refused.
            with pytest.raises(OutboundRefused):
                http.post("/v1/chat/completions", json={})
        assert lookups == ["rebind.example"] * 2 and fake.hits == 1


def test_redirects_are_not_followed() -> None:
    moved = Reply(302, b"", headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    with (
        FakeTeacher(lambda n, p: moved) as fake,
        _client(fake.base_url, OutboundPolicy.parse("127.0.0.1")) as c,
    ):
        with pytest.raises(TeacherError, match=r"redirect \(HTTP 302\): not followed"):
            c.complete(MSGS, max_tokens=8)
    assert fake.hits == 1


@pytest.mark.parametrize("status", [400, 401, 404, 500])
def test_an_allowed_upstreams_error_body_never_reaches_the_error(status: int) -> None:
    body = b'{"error": "INTERNAL-ONLY db=postgres://admin:hunter2@10.0.0.3"}'
    policy = OutboundPolicy.parse("127.0.0.1")
    with FakeTeacher(lambda n, p: Reply(status, body)) as fake, _client(fake.base_url, policy) as c:
        with pytest.raises(TeacherError) as err:
            c.complete(MSGS, max_tokens=8)
    message = str(err.value)
    assert f"HTTP {status}" in message
    assert "INTERNAL-ONLY" not in message and "hunter2" not in message and "127.0.0.1" not in message


def test_complete_many_stops_at_the_first_refusal() -> None:
    from synth.teacher import ChatRequest

    with FakeTeacher(lambda n, p: chat("x")) as fake:
        port = fake.base_url.split(":")[2].split("/")[0]
        with _client(f"http://localhost:{port}/v1", NO_ALLOW, max_concurrency=1) as c:
            with pytest.raises(TeacherRefused):
                c.complete_many([ChatRequest(MSGS, 8)] * 20)
        assert fake.hits == 0 and c.usage.requests == 1
