"""The model registry: per org, registered models (named by the jobs' `suffix`), numbered versions
(one per job that reached publish, gate passed or not) and aliases such as `prod`.

The publish step records versions (`record_version`, inside its own transaction); routes and tools
read them and move aliases. An alias can only point at a version that passed its gate, and a
version's gate result never changes, so the check in `set_alias` holds for the alias's lifetime.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from infra.models import Artifact, ModelAlias, ModelVersion, Org, RegisteredModel, now
from services import artifacts as artifact_service
from services.errors import Conflict, InvalidRequest, NotFound
from services.pagination import page
from services.schemas.registry import ModelAliasPublic, ModelVersionPublic, RegisteredModelPublic

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def model_name_for(config: JobConfig) -> str:
    """The registered model a job's versions go to: its suffix, else the base's short name
    (`LiquidAI/LFM2-350M` -> `LFM2-350M`)."""
    return config.suffix or config.model.rstrip("/").split("/")[-1]


# --- written by the publish step ------------------------------------------------------------


def version_of_job(session: Session, job_id: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.job_id == job_id))


def _get_or_create_model(session: Session, org_id: str, name: str) -> RegisteredModel:
    stmt = select(RegisteredModel).where(RegisteredModel.org_id == org_id, RegisteredModel.name == name)
    found = session.scalar(stmt)
    if found is not None:
        return found
    try:
        with session.begin_nested():  # a savepoint: losing the race must not undo the caller's work
            model = RegisteredModel(org_id=org_id, name=name)
            session.add(model)
        return model
    except IntegrityError:  # another job of the org created it first (and has committed)
        return session.scalars(stmt).one()


def _next_version(session: Session, model_id: str) -> int:
    # One UPDATE both bumps the counter and takes the row lock until commit, so two publishes of
    # the same model get consecutive numbers instead of racing on max(version) + 1.
    return session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model_id)
        .values(latest_version=RegisteredModel.latest_version + 1, updated_at=now())
        .returning(RegisteredModel.latest_version)
    ).scalar_one()


def record_version(
    session: Session,
    *,
    org_id: str,
    job_id: str,
    model_name: str,
    fine_tuned_model: str | None,
    gate: dict[str, object] | None,
    gate_passed: bool,
    artifact_ids: list[str],
) -> ModelVersion:
    """The next version of `model_name` for this job, in the caller's transaction (not committed).
    A job has at most one version: a second call returns the first."""
    existing = version_of_job(session, job_id)
    if existing is not None:
        return existing
    model = _get_or_create_model(session, org_id, model_name)
    version = ModelVersion(
        org_id=org_id,
        model_id=model.id,
        version=_next_version(session, model.id),
        job_id=job_id,
        fine_tuned_model=fine_tuned_model,
        gate=gate,
        gate_passed=gate_passed,
        artifact_ids=artifact_ids,
    )
    session.add(version)
    session.flush()
    return version


# --- read by routes and tools ---------------------------------------------------------------


def get_model(*, session: Session, org: Org, name: str, lock: bool = False) -> RegisteredModel:
    stmt = select(RegisteredModel).where(RegisteredModel.org_id == org.id, RegisteredModel.name == name)
    model = session.scalar(stmt.with_for_update() if lock else stmt)
    if model is None:
        raise NotFound(f"No such registered model: {name!r}", param="name", code="model_not_found")
    return model


def _get_model_by_id(session: Session, org: Org, model_id: str) -> RegisteredModel:
    model = session.get(RegisteredModel, model_id)
    if model is None or model.org_id != org.id:
        raise NotFound(f"No such registered model: {model_id!r}", param="after", code="model_not_found")
    return model


def list_models(
    *, session: Session, org: Org, after: str | None, limit: int
) -> tuple[list[RegisteredModel], bool]:
    stmt = select(RegisteredModel).where(RegisteredModel.org_id == org.id)
    after_row = _get_model_by_id(session, org, after) if after else None
    return page(session, stmt, (RegisteredModel.created_at, RegisteredModel.id), after_row, limit)


def get_version(*, session: Session, org: Org, name: str, version: int) -> ModelVersion:
    model = get_model(session=session, org=org, name=name)
    return _version(session, model, version)


def _version(session: Session, model: RegisteredModel, number: int) -> ModelVersion:
    found = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
    )
    if found is None:
        raise NotFound(
            f"Model {model.name!r} has no version {number}", param="version", code="version_not_found"
        )
    return found


def list_versions(
    *, session: Session, org: Org, name: str, after: str | None, limit: int
) -> tuple[list[ModelVersion], bool]:
    """Newest version first; `after` is the id (modelver-...) of the last version seen."""
    model = get_model(session=session, org=org, name=name)
    after_row = None
    if after:
        after_row = session.get(ModelVersion, after)
        if after_row is None or after_row.model_id != model.id:
            raise NotFound(f"No such version of {name!r}: {after!r}", param="after", code="version_not_found")
    stmt = select(ModelVersion).where(ModelVersion.model_id == model.id)
    return page(session, stmt, (ModelVersion.version, ModelVersion.id), after_row, limit)


# --- aliases --------------------------------------------------------------------------------


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise InvalidRequest(
            f"alias {alias!r} must be 1-32 characters of a-z, 0-9 and '-', starting with a letter",
            param="alias",
            code="invalid_alias",
        )
    return alias


def _find_alias(session: Session, model: RegisteredModel, alias: str) -> ModelAlias | None:
    return session.scalar(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )


def set_alias(*, session: Session, org: Org, name: str, alias: str, version: int) -> ModelAlias:
    """Point `alias` at `version` (creating the alias or moving it). A version whose gate failed is
    refused with a 409: its artifacts stay downloadable but can never be what an alias serves."""
    check_alias(alias)
    # Locking the model row serializes alias writes per model: two PUTs of a new alias cannot
    # both insert it.
    model = get_model(session=session, org=org, name=name, lock=True)
    target = _version(session, model, version)
    if not target.gate_passed:
        raise Conflict(
            f"version {version} of {name!r} failed its eval gate; an alias can only point at a "
            "version that passed",
            param="version",
            code="version_failed_gate",
        )
    row = _find_alias(session, model, alias)
    if row is None:
        row = ModelAlias(org_id=org.id, model_id=model.id, alias=alias, version_id=target.id)
        session.add(row)
    else:
        row.version_id, row.updated_at = target.id, now()
    session.commit()
    return row


def get_alias(*, session: Session, org: Org, name: str, alias: str) -> ModelAlias:
    check_alias(alias)
    row = _find_alias(session, get_model(session=session, org=org, name=name), alias)
    if row is None:
        raise NotFound(f"Model {name!r} has no alias {alias!r}", param="alias", code="alias_not_found")
    return row


def delete_alias(*, session: Session, org: Org, name: str, alias: str) -> None:
    session.delete(get_alias(session=session, org=org, name=name, alias=alias))
    session.commit()


# --- public shapes --------------------------------------------------------------------------


def _aliases_by_model(session: Session, model_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = session.execute(
        select(ModelAlias.model_id, ModelAlias.alias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
        .where(ModelAlias.model_id.in_(model_ids))
        .order_by(ModelAlias.alias)
    )
    out: dict[str, dict[str, int]] = {}
    for model_id, alias, number in rows:
        out.setdefault(model_id, {})[alias] = number
    return out


def models_to_public(session: Session, models: list[RegisteredModel]) -> list[RegisteredModelPublic]:
    aliases = _aliases_by_model(session, [m.id for m in models]) if models else {}
    return [
        RegisteredModelPublic(
            id=m.id,
            name=m.name,
            created_at=m.created_at,
            updated_at=m.updated_at,
            latest_version=m.latest_version,
            aliases=aliases.get(m.id, {}),
        )
        for m in models
    ]


def _artifacts(session: Session, ids: Iterable[str]) -> dict[str, Artifact]:
    wanted = list(ids)
    if not wanted:
        return {}
    return {a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(wanted)))}


def versions_to_public(session: Session, versions: list[ModelVersion]) -> list[ModelVersionPublic]:
    """Each version with its artifacts, read in one query for the whole page."""
    found = _artifacts(session, (i for v in versions for i in v.artifact_ids))
    names = {
        m.id: m.name
        for m in session.scalars(
            select(RegisteredModel).where(RegisteredModel.id.in_({v.model_id for v in versions}))
        )
    }
    return [
        ModelVersionPublic(
            id=v.id,
            model=names[v.model_id],
            version=v.version,
            created_at=v.created_at,
            job_id=v.job_id,
            fine_tuned_model=v.fine_tuned_model,
            status="published" if v.gate_passed else "rejected",
            gate_passed=v.gate_passed,
            gate=v.gate,
            artifact_ids=list(v.artifact_ids),
            artifacts=[artifact_service.to_public(found[i]) for i in v.artifact_ids if i in found],
        )
        for v in versions
    ]


def alias_to_public(session: Session, row: ModelAlias) -> ModelAliasPublic:
    version = session.get(ModelVersion, row.version_id)
    assert version is not None  # the foreign key cascades deletes
    resolved = versions_to_public(session, [version])[0]
    return ModelAliasPublic(
        alias=row.alias,
        model=resolved.model,
        version=resolved.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model_version=resolved,
    )
