"""The model registry over the live API: versions that the real gate and publish steps record
(PostgreSQL, moto S3), aliases that refuse a version whose gate failed, and org isolation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.errors import EvalGateFailed
from tests.conftest import new_key
from tests.support.ledger import org_of
from tests.worker.test_registry_publish import exported_job


def _call(server, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return server.api.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


@pytest.fixture()
def sentiment(platform, tmp_path: Path) -> dict[str, Any]:
    """An org whose model `sentiment` has version 1 refused by the gate and version 2 passed."""
    from worker.stages.gate import gate
    from worker.stages.publish import publish

    key = new_key()
    org_id = org_of(key)
    refused = exported_job(tmp_path, org_id, suffix="sentiment", gate={"min_score": 0.9})
    with pytest.raises(EvalGateFailed):
        gate(refused)
    passed = exported_job(tmp_path, org_id, suffix="sentiment")
    passed.state.update(gate(passed))  # as the pipeline merges a finished stage's outputs
    publish(passed)
    return {"key": key, "refused": refused.job_id, "passed": passed.job_id}


def test_versions_are_listed_with_their_gate_result_and_artifacts(server, sentiment) -> None:
    key = sentiment["key"]
    models = _call(server, key, "GET", "/registry/models").json()
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in models["data"]] == [("sentiment", 2, {})]

    page = _call(server, key, "GET", "/registry/models/sentiment/versions").json()
    v2, v1 = page["data"]
    assert (v2["version"], v2["status"], v2["gate_passed"], v2["job_id"]) == (
        2,
        "published",
        True,
        sentiment["passed"],
    )
    assert v2["fine_tuned_model"].startswith("ft:test/tiny-lfm2:") and v2["gate"]["passed"]
    assert (v1["version"], v1["status"], v1["gate_passed"], v1["fine_tuned_model"]) == (
        1,
        "rejected",
        False,
        None,
    )
    assert any("min_score" in r for r in v1["gate"]["reasons"])
    assert sorted(a["id"] for a in v1["artifacts"]) == sorted(v1["artifact_ids"])
    assert {a["status"] for a in v1["artifacts"]} == {"rejected"} and len(v1["artifacts"]) == 2
    assert {a["status"] for a in v2["artifacts"]} == {"published"}

    first = _call(server, key, "GET", "/registry/models/sentiment/versions", params={"limit": 1}).json()
    assert first["has_more"] and [v["version"] for v in first["data"]] == [2]
    rest = _call(
        server,
        key,
        "GET",
        "/registry/models/sentiment/versions",
        params={"limit": 1, "after": first["last_id"]},
    ).json()
    assert not rest["has_more"] and [v["version"] for v in rest["data"]] == [1]

    one = _call(server, key, "GET", "/registry/models/sentiment/versions/1").json()
    assert one["id"] == v1["id"] and one["status"] == "rejected"
    err = _error(_call(server, key, "GET", "/registry/models/sentiment/versions/9"), 404)
    assert (err["param"], err["code"]) == ("version", "version_not_found")
    err = _error(_call(server, key, "GET", "/registry/models/nope/versions"), 404)
    assert (err["param"], err["code"]) == ("name", "model_not_found")


def test_aliases_refuse_a_failed_version_and_accept_a_passed_one(server, sentiment) -> None:
    key, base = sentiment["key"], "/registry/models/sentiment/aliases"
    err = _error(_call(server, key, "PUT", f"{base}/prod", json={"version": 1}), 409)
    assert (err["param"], err["code"], err["type"]) == ("version", "version_failed_gate", "conflict_error")
    _error(_call(server, key, "GET", f"{base}/prod"), 404)  # the refused PUT created nothing

    alias = _call(server, key, "PUT", f"{base}/prod", json={"version": 2}).json()
    assert (alias["object"], alias["alias"], alias["model"], alias["version"]) == (
        "model_alias",
        "prod",
        "sentiment",
        2,
    )
    assert alias["model_version"]["job_id"] == sentiment["passed"]

    # Moving the alias onto the failed version is refused too, and leaves it where it was.
    _error(_call(server, key, "PUT", f"{base}/prod", json={"version": 1}), 409)
    resolved = _call(server, key, "GET", f"{base}/prod").json()
    assert resolved["version"] == 2 and resolved["model_version"]["status"] == "published"
    art = resolved["model_version"]["artifacts"][0]
    body = _call(server, key, "GET", f"/artifacts/{art['id']}/content").content
    assert hashlib.sha256(body).hexdigest() == art["sha256"]
    model = _call(server, key, "GET", "/registry/models/sentiment").json()
    assert model["aliases"] == {"prod": 2}

    err = _error(_call(server, key, "PUT", f"{base}/prod", json={"version": 7}), 404)
    assert (err["param"], err["code"]) == ("version", "version_not_found")
    for bad in ("Prod", "9lives", "a" * 33, "pr_od"):
        err = _error(_call(server, key, "PUT", f"{base}/{bad}", json={"version": 2}), 400)
        assert (err["param"], err["code"]) == ("alias", "invalid_alias")
    assert (
        _error(_call(server, key, "PUT", f"{base}/staging", json={"version": 0}), 400)["param"] == "version"
    )
    assert _error(_call(server, key, "PUT", f"{base}/staging", json={}), 400)["param"] == "version"

    deleted = _call(server, key, "DELETE", f"{base}/prod").json()
    assert deleted == {"id": "prod", "object": "model_alias", "deleted": True}
    err = _error(_call(server, key, "GET", f"{base}/prod"), 404)
    assert (err["param"], err["code"]) == ("alias", "alias_not_found")
    _error(_call(server, key, "DELETE", f"{base}/prod"), 404)


def test_another_org_sees_none_of_the_registry(server, sentiment) -> None:
    owner, other = sentiment["key"], new_key()
    assert _call(
        server, owner, "PUT", "/registry/models/sentiment/aliases/prod", json={"version": 2}
    ).is_success
    assert _call(server, other, "GET", "/registry/models").json()["data"] == []
    for method, path, body in (
        ("GET", "/registry/models/sentiment", None),
        ("GET", "/registry/models/sentiment/versions", None),
        ("GET", "/registry/models/sentiment/versions/2", None),
        ("GET", "/registry/models/sentiment/aliases/prod", None),
        ("PUT", "/registry/models/sentiment/aliases/prod", {"version": 2}),
        ("DELETE", "/registry/models/sentiment/aliases/prod", None),
    ):
        err = _error(_call(server, other, method, path, json=body), 404)
        assert err["param"] == "name", (method, path)
    owner_art = _call(server, owner, "GET", "/artifacts", params={"job_id": sentiment["refused"]}).json()[
        "data"
    ][0]
    assert _call(server, other, "GET", "/artifacts").json()["data"] == []
    _error(_call(server, other, "GET", f"/artifacts/{owner_art['id']}/content"), 404)
    # the owner's alias is untouched by the other org's attempts
    assert _call(server, owner, "GET", "/registry/models/sentiment/aliases/prod").json()["version"] == 2
    assert (
        _error(_call(server, "et-not-a-key", "GET", "/registry/models"), 401)["type"]
        == "authentication_error"
    )
