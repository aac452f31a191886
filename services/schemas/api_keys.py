from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

KeyStatus = Literal["active", "expired", "revoked"]


# Shared properties of a key's expiry: give one of the two, or neither for a key that never expires
class ApiKeyExpiry(BaseModel):
    expires_in_days: float | None = Field(
        default=None, gt=0, le=3650, description="Days from now until the key is refused."
    )
    expires_at: int | None = Field(default=None, description="Unix seconds when the key is refused.")


# Properties to receive on POST /v1/api_keys
class ApiKeyCreate(ApiKeyExpiry):
    name: str = Field(min_length=1, max_length=128, description="A label to tell keys apart.")


# Properties to receive on POST /v1/api_keys/{id}/rotate (the body is optional)
class ApiKeyRotate(ApiKeyExpiry):
    grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=7 * 86400,
        description="How long the old key keeps working (0: revoked at once).",
    )


# Properties to return via API: never the secret
class ApiKeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str  # the secret's first characters, e.g. "et-AbC1dEf"
    status: KeyStatus
    created_at: int
    expires_at: int | None  # None: never
    revoked_at: int | None  # in the future during a rotation's grace period
    last_used_at: int | None  # to the minute
    rotated_from: str | None  # the key this one replaced


# Properties to return on create and rotate: the secret, shown this once
class ApiKeyCreated(ApiKeyPublic):
    key: str
