"""Console sessions (services/console_sessions.py) on the real database: a token names the key
that signed in and works only while its signature holds, it is young enough and the key is still
active; the CSRF token belongs to one session."""

from __future__ import annotations

import pytest

from infra.db import session_scope
from services import api_keys, console_sessions
from services.errors import AuthenticationError
from tests.conftest import new_key


def _org_of(token: str) -> str:
    with session_scope() as session:
        return console_sessions.org_of(session=session, token=token).id


def _sign_in(key: str) -> str:
    with session_scope() as session:
        return console_sessions.sign_in(session=session, api_key=key)


def test_a_session_is_the_keys_org_and_never_holds_the_key(platform) -> None:
    key = new_key()
    token = _sign_in(key)
    with session_scope() as session:
        org = api_keys.authenticate(session=session, authorization=f"Bearer {key}")
        assert _org_of(token) == org.id
    assert key not in token and key.removeprefix("et-") not in token


@pytest.mark.parametrize("key", ["et-unknown", "", "Bearer x"])
def test_a_bad_key_signs_nobody_in(platform, key: str) -> None:
    with pytest.raises(AuthenticationError, match="Incorrect API key|didn't provide|must be 'Bearer"):
        _sign_in(key)


def test_a_forged_or_old_token_or_a_revoked_key_ends_the_session(platform, monkeypatch) -> None:
    key = new_key()
    token = _sign_in(key)
    key_id, issued, mac = token.split(".")
    other_mac = mac[:-1] + ("B" if mac.endswith("A") else "A")
    for forged in (f"{key_id}.{int(issued) + 1}.{mac}", f"{key_id}.{issued}.{other_mac}", "", "a.b", None):
        with pytest.raises(AuthenticationError, match="session has ended"):
            _org_of(forged)  # type: ignore[arg-type]
    later = int(issued) + console_sessions.SESSION_MAX_AGE_S + 1
    monkeypatch.setattr(console_sessions, "now", lambda: later)
    with pytest.raises(AuthenticationError):
        _org_of(token)
    monkeypatch.undo()
    assert _org_of(token)
    with session_scope() as session:
        org = api_keys.authenticate(session=session, authorization=f"Bearer {key}")
        api_keys.revoke(session=session, org=org, key_id=key_id)
    with pytest.raises(AuthenticationError):
        _org_of(token)


def test_the_csrf_token_is_its_sessions_own(platform) -> None:
    mine, theirs = _sign_in(new_key()), _sign_in(new_key())
    assert console_sessions.csrf_ok(mine, console_sessions.csrf_token(mine))
    assert not console_sessions.csrf_ok(mine, console_sessions.csrf_token(theirs))
    assert not console_sessions.csrf_ok(mine, "") and not console_sessions.csrf_ok("", "")
