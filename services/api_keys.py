"""API keys: create, authenticate, list, revoke, rotate. The REST routes (api/routes/api_keys.py), the
MCP server and the `edgetune keys` CLI all call these.

A key is a random 32-byte secret shown once; only its sha256 is stored (a fast hash is right here:
the secret has 256 bits of entropy, nothing to brute-force). Keys belong to an org, and a request
manages only its own org's keys: another org's key id is a 404, as if it did not exist.

A key is refused (401) from its `revoked_at` on, and from its `expires_at` on. A revoked key is
answered exactly like a key that never existed (`invalid_api_key`); an expired one says so
(`api_key_expired`) and nothing more.

Rotation makes a new key (a new id and secret, the old one's name, its lifetime counted again from
now unless the request sets another expiry) and revokes the old one, at once or after a grace
period of at most seven days (its `revoked_at` is then in the future), so deployments can switch
over. A key already revoked cannot be rotated (409); an expired one can.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from infra.models import ApiKey, Org, now
from services.errors import AuthenticationError, Conflict, InvalidRequest, NotFound

KEY_PREFIX = "et-"
PREFIX_CHARS = 10  # stored and listed: "et-" and 7 characters of the secret
MAX_EXPIRES_DAYS = 3650
MAX_GRACE_SECONDS = 7 * 86400
LAST_USED_RESOLUTION_S = 60  # last_used_at is written at most once a minute per key
_KEY_ID = re.compile(r"^key-[0-9a-f]{1,36}$")

KeyStatus = Literal["active", "expired", "revoked"]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def status_of(row: ApiKey, at: int | None = None) -> KeyStatus:
    t = now() if at is None else at
    if row.revoked_at is not None and row.revoked_at <= t:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= t:
        return "expired"
    return "active"


def resolve_expiry(
    *, expires_in_days: float | None = None, expires_at: int | None = None, at: int | None = None
) -> int | None:
    """The unix time a new key expires at (None: never), from one of the two ways to say it."""
    t = now() if at is None else at
    if expires_in_days is not None and expires_at is not None:
        raise InvalidRequest("Give expires_in_days or expires_at, not both.", param="expires_at")
    if expires_in_days is not None:
        if not 0 < expires_in_days <= MAX_EXPIRES_DAYS:
            raise InvalidRequest(
                f"expires_in_days must be more than 0 and at most {MAX_EXPIRES_DAYS}.",
                param="expires_in_days",
            )
        return t + max(1, round(expires_in_days * 86400))
    if expires_at is not None:
        if expires_at <= t:
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
        if expires_at > t + MAX_EXPIRES_DAYS * 86400:
            raise InvalidRequest(f"expires_at must be within {MAX_EXPIRES_DAYS} days.", param="expires_at")
        return expires_at
    return None


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise InvalidRequest("name must be 1 to 128 characters.", param="name")
    return name


def _new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def issue_key(
    *, session: Session, org: Org, name: str = "default", expires_at: int | None = None
) -> tuple[ApiKey, str]:
    """A new key for `org` (flushed, not committed); returns the row and the plaintext key (shown once)."""
    key = _new_secret()
    row = ApiKey(
        org_id=org.id,
        key_hash=hash_key(key),
        prefix=key[:PREFIX_CHARS],
        name=_check_name(name),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, key


def create_key(
    *, session: Session, org_name: str, name: str = "default", expires_at: int | None = None
) -> tuple[Org, str]:
    """Create the org if needed and a new key for it (the operator's `edgetune keys create`); returns
    the org and the plaintext key. Flushed, not committed: the caller's session_scope commits."""
    org = session.scalar(select(Org).where(Org.name == org_name))
    if org is None:
        org = Org(name=org_name)
        session.add(org)
        session.flush()
    _, key = issue_key(session=session, org=org, name=name, expires_at=expires_at)
    return org, key


def authenticate(*, session: Session, authorization: str | None) -> Org:
    if not authorization:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("Authorization header must be 'Bearer <key>'.", code="invalid_api_key")
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key.strip())))
    t = now()
    status = None if row is None else status_of(row, t)
    if row is None or status == "revoked":  # a revoked key reads as one that never existed
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    if status == "expired":
        raise AuthenticationError(
            "This API key has expired. Create a new one (POST /v1/api_keys with a valid key, or "
            "`edgetune keys create`).",
            code="api_key_expired",
        )
    org = session.get(Org, row.org_id)
    assert org is not None  # FK guarantees it
    if row.last_used_at is None or row.last_used_at <= t - LAST_USED_RESOLUTION_S:
        _touch(session, row, t)
    return org


def _touch(session: Session, row: ApiKey, t: int) -> None:
    # One write a minute per key at most, committed at once: the request's own transaction may
    # never commit (a GET). The WHERE lets concurrent requests skip it once one has written it.
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == row.id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= t - LAST_USED_RESOLUTION_S),
        )
        .values(last_used_at=t)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    row.last_used_at = t


def to_public(row: ApiKey) -> dict[str, Any]:
    """The fields of services.schemas.api_keys.ApiKeyPublic; never the secret (it is not stored)."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "status": status_of(row),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
        "rotated_from": row.rotated_from,
    }


def get_key(*, session: Session, org: Org, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id) if _KEY_ID.match(key_id) else None
    if row is None or row.org_id != org.id:
        raise NotFound(f"No such API key: {key_id!r}", param="key_id", code="api_key_not_found")
    return row


def find_key_any_org(*, session: Session, key_id: str) -> tuple[Org, ApiKey]:
    """The operator's lookup (the CLI): a key of any org, with its org."""
    row = session.get(ApiKey, key_id) if _KEY_ID.match(key_id) else None
    if row is None:
        raise NotFound(f"No such API key: {key_id!r}", param="key_id", code="api_key_not_found")
    org = session.get(Org, row.org_id)
    assert org is not None
    return org, row


def list_keys(
    *, session: Session, org: Org, after: str | None = None, limit: int = 20
) -> tuple[list[ApiKey], bool]:
    """The org's keys, newest first, revoked and expired ones included."""
    from services.pagination import page

    after_row = get_key(session=session, org=org, key_id=after) if after else None
    stmt = select(ApiKey).where(ApiKey.org_id == org.id)
    return page(session, stmt, (ApiKey.created_at, ApiKey.id), after_row, limit)


def create(
    *,
    session: Session,
    org: Org,
    name: str,
    expires_in_days: float | None = None,
    expires_at: int | None = None,
) -> tuple[ApiKey, str]:
    """POST /v1/api_keys: a new key for the org; committed. Returns the row and the secret."""
    row, key = issue_key(
        session=session,
        org=org,
        name=name,
        expires_at=resolve_expiry(expires_in_days=expires_in_days, expires_at=expires_at),
    )
    session.commit()
    return row, key


def revoke(*, session: Session, org: Org, key_id: str) -> ApiKey:
    """Refuse the key from now on (a key in a rotation's grace period is cut off now); idempotent."""
    row = get_key(session=session, org=org, key_id=key_id)
    t = now()
    if row.revoked_at is None or row.revoked_at > t:
        row.revoked_at = t
    session.commit()
    return row


def rotate(
    *,
    session: Session,
    org: Org,
    key_id: str,
    grace_period_seconds: int = 0,
    expires_in_days: float | None = None,
    expires_at: int | None = None,
) -> tuple[ApiKey, str, ApiKey]:
    """A new key in place of `key_id`, which is revoked now or after `grace_period_seconds`.
    Returns the new row, its secret, and the old row."""
    if not 0 <= grace_period_seconds <= MAX_GRACE_SECONDS:
        raise InvalidRequest(
            f"grace_period_seconds must be between 0 and {MAX_GRACE_SECONDS}.", param="grace_period_seconds"
        )
    old = session.scalar(
        select(ApiKey)
        .where(ApiKey.id == get_key(session=session, org=org, key_id=key_id).id)
        .with_for_update()
    )
    assert old is not None
    t = now()
    if status_of(old, t) == "revoked":
        raise Conflict(f"API key {key_id!r} is revoked; create a new one instead.", code="api_key_revoked")
    if expires_in_days is None and expires_at is None and old.expires_at is not None:
        new_expiry: int | None = t + max(1, old.expires_at - old.created_at)  # the same lifetime, from now
    else:
        new_expiry = resolve_expiry(expires_in_days=expires_in_days, expires_at=expires_at, at=t)
    row, key = issue_key(session=session, org=org, name=old.name, expires_at=new_expiry)
    row.rotated_from = old.id
    revoke_at = t + grace_period_seconds
    if old.revoked_at is None or old.revoked_at > revoke_at:
        old.revoked_at = revoke_at
    session.commit()
    return row, key, old
