"""`edgetune keys create|list|revoke|rotate` (the operator's verbs, on the database) end to end:
the keys they print work against the live API until revoked or rotated away."""

from __future__ import annotations

import secrets

import httpx
from click.testing import CliRunner, Result

from cli.main import main


def cli(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


def _status(server, key: str) -> int:
    return httpx.get(f"{server.base_url}/files", headers={"Authorization": f"Bearer {key}"}).status_code


def test_create_list_rotate_revoke(server) -> None:
    org = f"cli-org-{secrets.token_hex(4)}"
    plain = cli("keys", "create", "--org", org).stdout.strip()
    made = cli("keys", "create", "--org", org, "--name", "deploy", "--expires-days", "30")
    key = made.stdout.strip()
    assert key.startswith("et-") and f"org: {org}" in made.stderr
    assert _status(server, key) == 200 and _status(server, plain) == 200

    rows = {
        r[1]: r for r in (line.split("\t") for line in cli("keys", "list", "--org", org).stdout.splitlines())
    }
    assert set(rows) == {"deploy", "default"}
    key_id, _, prefix, status, _created, expires, last_used = rows["deploy"]
    assert key_id.startswith("key-") and prefix == key[:10] and status == "active"
    assert expires != "-" and last_used != "-" and rows["default"][5] == "-"
    assert key not in cli("keys", "list", "--org", org).output

    rotated = cli("keys", "rotate", key_id)
    new = rotated.stdout.strip()
    assert new.startswith("et-") and new != key and f"replaces {key_id}" in rotated.stderr
    assert _status(server, key) == 401 and _status(server, new) == 200
    lines = [line.split("\t") for line in cli("keys", "list", "--org", org).stdout.splitlines()]
    status = {r[0]: r[3] for r in lines}
    (new_id,) = [r[0] for r in lines if r[1] == "deploy" and r[0] != key_id]  # same name, a new key
    assert status[new_id] == "active" and status[key_id] == "revoked"
    assert "revoked" in cli("keys", "rotate", key_id, code=1).output

    graced = cli("keys", "rotate", new_id, "--grace-seconds", "600").stdout.strip()
    assert _status(server, new) == 200 and _status(server, graced) == 200  # the old one, for 10 minutes
    assert cli("keys", "revoke", new_id).stdout.startswith(f"{new_id}\trevoked\t{org}")
    assert _status(server, new) == 401 and _status(server, graced) == 200


def test_unknown_keys_and_orgs_are_errors(platform) -> None:
    assert "No such API key" in cli("keys", "revoke", "key-0123", code=1).output
    assert "No such API key" in cli("keys", "rotate", "nope", code=1).output
    assert "no org named" in cli("keys", "list", "--org", f"none-{secrets.token_hex(4)}", code=1).output
    out = cli("keys", "create", "--org", "x", "--expires-days", "0", code=1).output
    assert "expires_in_days" in out
