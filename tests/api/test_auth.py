from __future__ import annotations

import httpx
import openai
import pytest


def test_missing_and_bad_keys_are_401_in_openai_shape(server) -> None:
    r = httpx.get(f"{server.base_url}/files")
    assert r.status_code == 401
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["code"] == "missing_api_key"
    r = httpx.get(f"{server.base_url}/files", headers={"Authorization": "Bearer et-nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{server.base_url}/files", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_openai_sdk_sees_authentication_error(server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="et-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.files.list()


def test_keys_are_stored_hashed(platform, api_key) -> None:
    from sqlalchemy import select

    from infra.db import session_scope
    from infra.models import ApiKey

    with session_scope() as session:
        stored = [k.key_hash for k in session.scalars(select(ApiKey))]
    assert api_key not in stored and all(len(h) == 64 for h in stored)
