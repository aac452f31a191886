"""Which GGUF answers a chat completion's `model`: the org's own fine-tunes only.

`model` may be a job's `fine_tuned_model` (`ft:<base>:<org>:<suffix>:<id>`), the job's id, a
registry alias (`support-router@prod`) or version (`support-router:3`), or a base model present on
this server (what a playground puts beside a fine-tune). A name that is not the org's is a 404
`model_not_found`, worded as for a name that does not exist, so another org's model is never
revealed. The artifact is copied once from the store into `<var>/inference/<sha256>.gguf` and
checked against its sha256 before llama.cpp opens it. A base that ships as a GGUF (SmolLM2) is
served from it; a base held as a Hugging Face checkpoint (LFM2) is converted once, by llama.cpp's
own converter, to a Q8_0 GGUF under `<var>/inference/bases/`, and served from that.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.job_config import JobConfig
from export.gguf_export import GGUFExportError, convert_to_gguf
from export.manifest import sha256_file
from infra.models import Artifact, Job, ModelVersion, Org
from infra.settings import get_settings
from infra.storage import get_store
from recipes.base_models import base_gguf, find_base_model
from services import model_registry
from services.artifacts import grammar_text
from services.errors import InvalidRequest, NotFound, ServiceUnavailable

_VERSION = re.compile(r"^(?P<name>[^:@]+):(?P<version>[0-9]{1,18})$")
_downloads: dict[str, threading.Lock] = {}
_downloads_lock = threading.Lock()


@dataclass(frozen=True)
class ServedModel:
    name: str  # what answers carry as `model`
    path: Path  # the local GGUF
    n_ctx: int
    job_id: str | None = None  # the fine-tune's job (its ledger rows carry it); None for a base
    grammar: str | None = None  # the GBNF the artifact ships (classification, extraction, tools)
    sampling: dict[str, Any] = field(default_factory=dict)  # defaults for unset sampling fields

    @property
    def cache_key(self) -> str:
        return f"{self.path.name}:{self.n_ctx}"


def not_found(model: str) -> NotFound:
    return NotFound(
        f"The model {model!r} does not exist or you do not have access to it; GET /v1/models lists yours",
        param="model",
        code="model_not_found",
    )


def resolve(*, session: Session, org: Org, model: str, target: str | None = None) -> ServedModel:
    """The org's GGUF for `model`, fetched locally; 404 for a name that is not the org's, 400 for
    one of its models that cannot answer (gate failed, not finished, no GGUF target)."""
    if model.startswith("ft:") or model.startswith("ftjob-"):
        column = Job.fine_tuned_model if model.startswith("ft:") else Job.id
        job = session.scalar(select(Job).where(Job.org_id == org.id, column == model))
        if job is None:
            raise not_found(model)
        return _served_job(session, job, target)
    if "@" in model or _VERSION.match(model):
        return _served_job(session, _registry_job(session, org, model), target)
    return _served_base(model)


def _registry_job(session: Session, org: Org, model: str) -> Job:
    """The job of `name@alias` or `name:version`; an alias only ever points at a passed version."""
    try:
        if "@" in model:
            name, alias = model.rsplit("@", 1)
            row = model_registry.get_alias(session=session, org=org, name=name, alias=alias)
            version = session.get_one(ModelVersion, row.version_id)
        else:
            m = _VERSION.match(model)
            assert m is not None
            number = int(m["version"])
            version = model_registry.get_version(session=session, org=org, name=m["name"], version=number)
    except (NotFound, InvalidRequest):
        raise not_found(model) from None
    if not version.gate_passed:
        raise InvalidRequest(
            f"{model} failed its eval gate: its artifacts are kept for inspection but never served",
            param="model",
            code="model_failed_gate",
        )
    return session.get_one(Job, version.job_id)


def _served_job(session: Session, job: Job, target: str | None) -> ServedModel:
    if not job.fine_tuned_model:
        raise InvalidRequest(_not_ready(job), param="model", code="model_not_ready")
    artifact = _gguf_artifact(session, job, target)
    manifest = artifact.manifest or {}
    cap = int(manifest.get("context_cap") or get_settings().inference_max_context)
    return ServedModel(
        name=job.fine_tuned_model,
        path=local_copy(artifact),
        n_ctx=min(cap, get_settings().inference_max_context),
        job_id=job.id,
        grammar=grammar_text(artifact)[1] if manifest.get("grammar") else None,
        sampling=dict(manifest.get("sampling") or {}),
    )


def _not_ready(job: Job) -> str:
    code = (job.error or {}).get("code")
    if code == "eval_gate_failed":
        return f"job {job.id} failed its eval gate: its artifacts are kept for inspection but never served"
    if job.status in ("failed", "cancelled"):
        return f"job {job.id} ended {job.status} and published no model"
    return f"job {job.id} is {job.status}: its model can be called once the job has succeeded"


def _gguf_artifact(session: Session, job: Job, target: str | None) -> Artifact:
    """The job's published GGUF for `target`, else for the first GGUF target the job listed."""
    found = session.scalars(
        select(Artifact).where(
            Artifact.job_id == job.id, Artifact.format == "gguf", Artifact.status == "published"
        )
    ).all()
    order = JobConfig.model_validate(job.config).target_names
    ggufs = sorted(found, key=lambda a: order.index(a.target) if a.target in order else len(order))
    if target is not None:
        ggufs = [a for a in ggufs if a.target == target]
    if ggufs:
        return ggufs[0]
    if target is not None:
        raise InvalidRequest(
            f"{job.fine_tuned_model} has no GGUF artifact for target {target!r}",
            param="target",
            code="model_has_no_gguf",
        )
    raise InvalidRequest(
        f"{job.fine_tuned_model} was exported to no GGUF target (targets: {', '.join(order)}); chat "
        "completions run GGUF artifacts in llama.cpp: fine-tune again with a GGUF target such as "
        "laptop-cpu",
        param="model",
        code="model_has_no_gguf",
    )


def _served_base(model: str) -> ServedModel:
    """A base model present on this server, answered by the GGUF it ships as or by its checkpoint
    converted once (`converted_base`). A base whose weights are not here is a 404 as any unknown
    name."""
    s = get_settings()
    try:
        info = find_base_model(model, s.models_dir, s.model_cache_dir)
    except OSError:  # a name no file system holds (too long a path component): no such model
        info = None
    if info is None or not info.available:
        raise not_found(model)
    path = base_gguf(info)
    if path is None:
        assert info.local_path is not None  # available: its checkpoint is here
        path = converted_base(info.id, info.local_path)
    sampling = info.sampling.model_dump(exclude_none=True) if info.sampling else {"temperature": 0.0}
    return ServedModel(
        name=info.id,
        path=path,
        n_ctx=min(info.context_length, s.inference_max_context),
        sampling=sampling,
    )


# Q8_0 is the converter's own quantization (no second pass through the quantizer) and is within
# noise of F16 in quality at half its size: a fair stand-in for the base beside a fine-tune.
BASE_OUTTYPE = "q8_0"


def converted_base(model_id: str, checkpoint: Path) -> Path:
    """The base checkpoint as a GGUF, converted on first use and kept: one conversion per base and
    weights folder (seconds for a 350M model), then every request reads the file."""
    digest = hashlib.sha256(f"{model_id}\0{checkpoint.resolve()}".encode()).hexdigest()[:16]
    dest = get_settings().var_dir.resolve() / "inference" / "bases" / f"{digest}-{BASE_OUTTYPE}.gguf"
    if dest.is_file():
        return dest
    with _downloads_lock:
        lock = _downloads.setdefault(dest.name, threading.Lock())
    with lock:  # one conversion per base; the others wait for it
        if dest.is_file():
            return dest
        try:
            return convert_to_gguf(checkpoint, dest, BASE_OUTTYPE)  # written whole, then renamed
        except GGUFExportError as e:
            raise InvalidRequest(
                f"the base model {model_id} could not be converted to a GGUF for llama.cpp: "
                f"{str(e).splitlines()[0]}",
                param="model",
                code="model_has_no_gguf",
            ) from e


def local_copy(artifact: Artifact) -> Path:
    """The artifact's GGUF on this machine, downloaded once and checked against its sha256."""
    cache = get_settings().var_dir.resolve() / "inference"
    dest = cache / f"{artifact.sha256}.gguf"
    if dest.is_file() and dest.stat().st_size == artifact.bytes:
        return dest
    with _downloads_lock:
        lock = _downloads.setdefault(artifact.sha256, threading.Lock())
    with lock:  # one download per file; the others wait for it
        if dest.is_file() and dest.stat().st_size == artifact.bytes:
            return dest
        tmp = cache / f"{artifact.sha256}.{uuid.uuid4().hex}.partial"
        get_store().download(artifact.storage_key, tmp)
        if sha256_file(tmp) != artifact.sha256:
            tmp.unlink(missing_ok=True)
            raise ServiceUnavailable(
                f"artifact {artifact.id} does not match its sha256 in the store; it was not loaded",
                code="artifact_corrupt",
            )
        tmp.replace(dest)  # readers never see a half-written file
    return dest
