"""Device agents (issue 18): real devices that measure an org's GGUF artifacts for one device
profile, and the benchmark tasks they take.

An org creates an agent for a profile (POST /v1/device_agents) and gets its key once; the agent
(`edgetune device-agent`, cli/device_agent.py) runs on the device with that key, which opens only
/v1/device_agent/* and only for its own org and profile: the key is not an API key (another table,
another prefix), and an API key is not an agent key.

The tasks they take are services/device_benchmarks.py's.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from export.profiles import UnknownProfileError, get_profile
from infra.models import DeviceAgent, DeviceBenchmark, Org, now
from infra.settings import get_settings
from services.api_keys import hash_key
from services.device_benchmarks import apply_lapses
from services.errors import AuthenticationError, InvalidRequest, NotFound
from services.schemas.device_agents import DeviceAgentPublic, DeviceFacts

AGENT_KEY_PREFIX = "etagent-"


def agent_public(agent: DeviceAgent, at: int | None = None) -> DeviceAgentPublic:
    t = now() if at is None else at
    seen = agent.last_seen_at
    online = (
        agent.revoked_at is None and seen is not None and t - seen <= get_settings().device_agent_online_s
    )
    return DeviceAgentPublic(
        id=agent.id,
        name=agent.name,
        profile=agent.profile,
        prefix=agent.prefix,
        online=online,
        facts=agent.facts,
        created_at=agent.created_at,
        last_seen_at=agent.last_seen_at,
        revoked_at=agent.revoked_at,
    )


def _check_profile(name: str, param: str) -> None:
    try:
        get_profile(name)
    except UnknownProfileError as exc:
        raise InvalidRequest(str(exc), param=param, code="unknown_profile") from exc


def create_agent(*, session: Session, org: Org, name: str, profile: str) -> tuple[DeviceAgent, str]:
    """POST /v1/device_agents: a new agent for one of the profiles; committed. Returns the row and
    its key (shown once; only its sha256 is kept)."""
    _check_profile(profile, "profile")
    key = AGENT_KEY_PREFIX + secrets.token_urlsafe(32)
    agent = DeviceAgent(
        org_id=org.id, name=name.strip(), profile=profile, key_hash=hash_key(key), prefix=key[:14]
    )
    session.add(agent)
    session.commit()
    return agent, key


def list_agents(*, session: Session, org: Org, profile: str | None = None) -> list[DeviceAgent]:
    stmt = select(DeviceAgent).where(DeviceAgent.org_id == org.id)
    if profile is not None:
        stmt = stmt.where(DeviceAgent.profile == profile)
    return list(session.scalars(stmt.order_by(DeviceAgent.created_at, DeviceAgent.id)))


def get_agent(*, session: Session, org: Org, agent_id: str) -> DeviceAgent:
    agent = session.get(DeviceAgent, agent_id)
    if agent is None or agent.org_id != org.id:
        raise NotFound(f"No such device agent: {agent_id!r}", param="agent_id", code="agent_not_found")
    return agent


def revoke_agent(*, session: Session, org: Org, agent_id: str) -> DeviceAgent:
    """DELETE /v1/device_agents/{id}: its key is refused from now on, and a task it holds goes
    back to the queue at once (it counts as one attempt)."""
    agent = get_agent(session=session, org=org, agent_id=agent_id)
    if agent.revoked_at is None:
        agent.revoked_at = now()
        session.execute(
            update(DeviceBenchmark)
            .where(DeviceBenchmark.agent_id == agent.id, DeviceBenchmark.status == "running")
            .values(lease_expires_at=0)
        )
        apply_lapses(session, agent.org_id)
    session.commit()
    return agent


def authenticate_agent(*, session: Session, authorization: str | None) -> DeviceAgent:
    """The agent of a request's Bearer key; 401 `invalid_agent_key` for anything else (an API key
    included), as if it did not exist. Marks the agent seen."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    agent = None
    if scheme.lower() == "bearer" and key.startswith(AGENT_KEY_PREFIX):
        agent = session.scalar(select(DeviceAgent).where(DeviceAgent.key_hash == hash_key(key)))
    if agent is None or agent.revoked_at is not None:
        raise AuthenticationError(
            "Send a device agent's key as 'Authorization: Bearer etagent-…' (POST /v1/device_agents).",
            code="invalid_agent_key",
        )
    agent.last_seen_at = now()
    session.commit()
    return agent


def hello(*, session: Session, agent: DeviceAgent, facts: DeviceFacts) -> DeviceAgent:
    """POST /v1/device_agent/hello: the agent says what it is; it must run for its key's profile."""
    if facts.profile != agent.profile:
        raise InvalidRequest(
            f"this agent's key is for profile {agent.profile!r}, not {facts.profile!r}",
            param="profile",
            code="profile_mismatch",
        )
    agent.facts = facts.model_dump(exclude={"profile"})
    session.commit()
    return agent
