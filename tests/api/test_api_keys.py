"""POST/GET/DELETE /v1/api_keys and .../rotate over HTTP: secrets shown once, revoked and expired
keys refused with a 401 in the error shape, another org's keys out of reach (404)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import new_key


def _call(server, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return server.api.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


def _set(key_id: str, **values: Any) -> None:
    from sqlalchemy import update

    from infra.db import session_scope
    from infra.models import ApiKey

    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


def test_create_list_revoke(server, api_key) -> None:
    r = _call(server, api_key, "POST", "/api_keys", json={"name": "ci", "expires_in_days": 30})
    assert r.status_code == 200, r.text
    made = r.json()
    secret = made["key"]
    assert made["id"].startswith("key-") and made["object"] == "api_key" and made["name"] == "ci"
    assert secret.startswith("et-") and made["prefix"] == secret[:10] and made["status"] == "active"
    assert abs(made["expires_at"] - (made["created_at"] + 30 * 86400)) <= 2 and made["revoked_at"] is None

    # the new key works, and using it is recorded (to the minute)
    assert _call(server, secret, "GET", "/files").status_code == 200
    page = _call(server, api_key, "GET", "/api_keys").json()
    assert page["object"] == "list" and len(page["data"]) == 2  # newest first, to the second
    assert all("key" not in k and secret not in str(k) for k in page["data"])
    listed = next(k for k in page["data"] if k["id"] == made["id"])
    assert listed["last_used_at"] is not None and listed["prefix"] == made["prefix"]
    assert _call(server, api_key, "GET", f"/api_keys/{made['id']}").json()["name"] == "ci"

    revoked = _call(server, api_key, "DELETE", f"/api_keys/{made['id']}").json()
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    err = _error(_call(server, secret, "GET", "/files"), 401)
    assert err["code"] == "invalid_api_key" and err["type"] == "authentication_error"
    # a revoked key reads exactly as a key that never existed
    unknown = _error(_call(server, "et-" + "x" * 43, "GET", "/files"), 401)
    assert unknown == err
    again = _call(server, api_key, "DELETE", f"/api_keys/{made['id']}").json()  # idempotent
    assert again["revoked_at"] == revoked["revoked_at"]
    assert _call(server, api_key, "GET", "/files").status_code == 200  # the other key is untouched


def test_expired_key_is_401_api_key_expired(server, api_key) -> None:
    made = _call(server, api_key, "POST", "/api_keys", json={"name": "short", "expires_in_days": 1}).json()
    assert _call(server, made["key"], "GET", "/files").status_code == 200
    _set(made["id"], expires_at=int(time.time()) - 1)
    err = _error(_call(server, made["key"], "GET", "/files"), 401)
    assert err["code"] == "api_key_expired" and err["type"] == "authentication_error"
    assert made["id"] not in err["message"] and made["prefix"] not in err["message"]
    listed = _call(server, api_key, "GET", f"/api_keys/{made['id']}").json()
    assert listed["status"] == "expired"
    # a revoked key that had also expired says nothing more than an unknown one
    _call(server, api_key, "DELETE", f"/api_keys/{made['id']}")
    assert _error(_call(server, made["key"], "GET", "/files"), 401)["code"] == "invalid_api_key"


def test_rotate_at_once_and_with_a_grace_period(server, api_key) -> None:
    made = _call(server, api_key, "POST", "/api_keys", json={"name": "deploy", "expires_in_days": 10}).json()
    old = made["key"]

    rotated = _call(server, old, "POST", f"/api_keys/{made['id']}/rotate").json()  # a key may rotate itself
    assert rotated["id"] != made["id"] and rotated["key"] != old and rotated["name"] == "deploy"
    assert rotated["rotated_from"] == made["id"] and rotated["status"] == "active"
    assert abs(rotated["expires_at"] - (rotated["created_at"] + 10 * 86400)) <= 2  # the same lifetime
    assert _error(_call(server, old, "GET", "/files"), 401)["code"] == "invalid_api_key"
    assert _call(server, rotated["key"], "GET", "/files").status_code == 200
    assert _call(server, api_key, "GET", f"/api_keys/{made['id']}").json()["status"] == "revoked"
    err = _error(_call(server, api_key, "POST", f"/api_keys/{made['id']}/rotate"), 409)
    assert err["code"] == "api_key_revoked"

    body = {"grace_period_seconds": 3600, "expires_at": int(time.time()) + 86400}
    second = _call(server, api_key, "POST", f"/api_keys/{rotated['id']}/rotate", json=body).json()
    assert second["expires_at"] == body["expires_at"]
    assert _call(server, rotated["key"], "GET", "/files").status_code == 200  # still in its grace period
    assert _call(server, second["key"], "GET", "/files").status_code == 200
    during = _call(server, api_key, "GET", f"/api_keys/{rotated['id']}").json()
    assert during["status"] == "active" and during["revoked_at"] >= time.time() + 3500
    # revoking cuts the grace period short
    assert _call(server, api_key, "DELETE", f"/api_keys/{rotated['id']}").json()["status"] == "revoked"
    assert _error(_call(server, rotated["key"], "GET", "/files"), 401)["code"] == "invalid_api_key"


def test_another_orgs_keys_are_404(server, api_key) -> None:
    theirs = new_key()
    their_id = _call(server, theirs, "GET", "/api_keys").json()["data"][0]["id"]
    for method, path in (
        ("GET", f"/api_keys/{their_id}"),
        ("DELETE", f"/api_keys/{their_id}"),
        ("POST", f"/api_keys/{their_id}/rotate"),
    ):
        err = _error(_call(server, api_key, method, path), 404)
        assert err["code"] == "api_key_not_found"
    mine = _call(server, api_key, "GET", "/api_keys").json()["data"]
    assert their_id not in {k["id"] for k in mine}
    _error(_call(server, api_key, "GET", "/api_keys", params={"after": their_id}), 404)
    assert _call(server, theirs, "GET", "/files").status_code == 200  # untouched


def test_bad_requests_name_the_field(server, api_key) -> None:
    cases = [
        ({"name": ""}, "name"),
        ({"expires_in_days": 1}, "name"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_at": int(time.time()) - 10}, "expires_at"),
        ({"name": "x", "expires_in_days": 1, "expires_at": int(time.time()) + 100}, "expires_at"),
    ]
    for body, param in cases:
        assert _error(_call(server, api_key, "POST", "/api_keys", json=body), 400)["param"] == param, body
    key_id = _call(server, api_key, "GET", "/api_keys").json()["data"][0]["id"]
    body = {"grace_period_seconds": 8 * 86400}
    err = _error(_call(server, api_key, "POST", f"/api_keys/{key_id}/rotate", json=body), 400)
    assert err["param"] == "grace_period_seconds"
    for bad in ("nope", "key-%00", "key-" + "a" * 300):
        _error(_call(server, api_key, "GET", f"/api_keys/{bad}"), 404)
