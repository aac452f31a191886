"""Orgs and API keys. Keys are random 32-byte secrets shown once; only their sha256 is stored
(a fast hash is right here: the secret has 256 bits of entropy, nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.errors import AuthenticationError
from infra.models import ApiKey, Org

KEY_PREFIX = "et-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(*, session: Session, org_name: str) -> tuple[Org, str]:
    """Create the org if needed and a new key for it; returns the plaintext key (shown once)."""
    org = session.scalar(select(Org).where(Org.name == org_name))
    if org is None:
        org = Org(name=org_name)
        session.add(org)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(org_id=org.id, key_hash=hash_key(key), prefix=key[:10]))
    session.flush()
    return org, key


def authenticate(*, session: Session, authorization: str | None) -> Org:
    if not authorization:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("Authorization header must be 'Bearer <key>'.", code="invalid_api_key")
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key.strip()), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    org = session.get(Org, row.org_id)
    assert org is not None  # FK guarantees it
    return org
