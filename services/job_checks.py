"""A job config checked against what the org has: its files, the base-model catalog, the targets."""

from __future__ import annotations

from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from domain.lists import METHODS
from infra.models import Org
from services import catalog
from services.errors import InvalidRequest, NotFound
from services.files import get_file


def check_job_config(session: Session, org: Org, cfg: JobConfig) -> None:
    """The checks a job config must pass against the org's files and the catalog; a plan and a
    create both run them, so a quote is never given for a job that would be refused."""
    if cfg.training_file is None and cfg.task is None:
        raise InvalidRequest("give a training_file, or a task to synthesize data from", param="training_file")
    if not METHODS[cfg.method.type].synthesized and cfg.training_file is None:
        raise InvalidRequest(
            f"method.type '{cfg.method.type}' needs a training_file of {METHODS[cfg.method.type].rows} "
            "pairs (synthesis from a task makes supervised rows)",
            param="training_file",
        )
    for param in ("training_file", "validation_file"):
        file_id = getattr(cfg, param)
        if file_id is None:
            continue
        try:
            get_file(session=session, org=org, file_id=file_id, param=param)
        except NotFound as exc:  # a bad reference in the body is invalid input, not a missing route
            raise InvalidRequest(exc.message, param=param, code="file_not_found") from None
    if cfg.validation_file and cfg.validation_file == cfg.training_file:
        raise InvalidRequest("validation_file must differ from training_file", param="validation_file")
    base = catalog.check_base_model(cfg.model)
    catalog.check_targets(cfg, base.family)
