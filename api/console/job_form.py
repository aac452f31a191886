"""The console's create form: upload a JSONL file or describe a task, see the plan and its quote,
then submit. Both steps call the services the REST routes call (files.upload_file,
plans.plan_job, jobs.submit_job), so a field error is the service's own message, shown next to
the field it names (its `param`), and a bad form is the form again with a 400, never a 500."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from export.profiles import load_profiles
from infra.models import Org
from services import files, jobs, limits, models, plans
from services.errors import AuthenticationError, EdgetuneError
from services.schemas.jobs import JobCreate
from services.schemas.plans import PlanPublic

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
TextField = Annotated[str, Form(max_length=4096)]


@dataclass
class JobForm:
    """What the form holds, as typed: re-shown as it was after an error or a plan."""

    model: str = ""
    training_file: str = ""  # set once an uploaded file is stored, so a re-plan needs no re-upload
    task_description: str = ""
    task_labels: str = ""
    targets: list[str] = field(default_factory=lambda: ["laptop-cpu"])
    n_epochs: str = ""
    suffix: str = ""
    budget_usd: str = ""
    idempotency_key: str = ""  # made with the plan, so submitting twice makes one job

    def config(self) -> dict[str, Any]:
        """The create body the REST API would get; JobCreate validates it (strings included: a
        non-number in n_epochs is the schema's error on that field)."""
        cfg: dict[str, Any] = {"model": self.model.strip(), "targets": self.targets}
        if self.training_file:
            cfg["training_file"] = self.training_file
        if self.task_description.strip() or self.task_labels.strip():
            task: dict[str, Any] = {"description": self.task_description.strip()}
            if labels := [x.strip() for x in self.task_labels.split(",") if x.strip()]:
                task |= {"type": "classification", "labels": labels}
            cfg["task"] = task
        if self.n_epochs.strip():
            cfg["method"] = {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": self.n_epochs}},
            }
        if self.suffix.strip():
            cfg["suffix"] = self.suffix.strip()
        if self.budget_usd.strip():
            cfg["budget_usd"] = self.budget_usd.strip()
        return cfg


def field_of(param: str | None) -> str:
    """The form field a service or schema error's `param` belongs to ("targets[1]", "task.labels",
    "method.supervised.hyperparameters.n_epochs.int"); "form" when none does."""
    parts = (param or "").replace("[", ".").split(".")
    head = parts[0]
    if head in ("training_file", "file", "validation_file"):
        return "file"
    if head == "task":
        return "task_labels" if len(parts) > 1 and parts[1].startswith("label") else "task_description"
    if "n_epochs" in parts:
        return "n_epochs"
    return head if head in ("model", "targets", "suffix", "budget_usd") else "form"


def schema_errors(error: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in error.errors():
        param = ".".join(str(p) for p in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        name = field_of(param)  # next to its field the message is enough; at the top, say which
        out.setdefault(name, f"{param}: {message}" if name == "form" and param else message)
    return out


def _page(
    request: Request,
    session: Session,
    user: auth.ConsoleUser,
    form: JobForm,
    *,
    plan: PlanPublic | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    base_models = [
        m.id
        for m in models.list_models(session=session, org=user.org)
        if m.kind == "base" and m.details.get("available")
    ]
    context = {
        "csrf": user.csrf,
        "form": form,
        "plan": plan,
        "errors": errors or {},
        "base_models": base_models,
        "all_targets": sorted(load_profiles()),
    }
    return render(request, "new_job.html", context, status_code=400 if errors else 200)


@router.get("/jobs/new", name="console_new_job")
def new_job_form(request: Request, session: SessionDep, user: auth.ConsoleUserDep) -> Response:
    return _page(request, session, user, JobForm())


def _plan_or_submit(session: Session, org: Org, form: JobForm, action: str, upload: UploadFile | None) -> Any:
    """The plan, or (action "submit") the submitted job; raises the service's error."""
    with limits.heavy_slot(org):
        if upload is not None and upload.filename:
            stored = files.upload_file(
                session=session, org=org, filename=upload.filename, purpose="fine-tune", stream=upload.file
            )
            form.training_file = stored.id
        config = JobCreate.model_validate(form.config())
        if action == "submit":
            job, _ = jobs.submit_job(
                session=session, org=org, config=config, idempotency_key=form.idempotency_key or None
            )
            return job
        return plans.plan_job(session=session, org=org, config=config)


@router.post("/jobs/new", name="console_new_job_submit")
def new_job_submit(
    request: Request,
    session: SessionDep,
    user: auth.CheckedUserDep,
    model: TextField = "",
    training_file: TextField = "",
    task_description: TextField = "",
    task_labels: TextField = "",
    targets: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    n_epochs: TextField = "",
    suffix: TextField = "",
    budget_usd: TextField = "",
    idempotency_key: TextField = "",
    action: TextField = "plan",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    form = JobForm(
        model,
        training_file,
        task_description,
        task_labels,
        targets,
        n_epochs,
        suffix,
        budget_usd,
        idempotency_key or secrets.token_hex(16),
    )
    try:
        result = _plan_or_submit(session, user.org, form, action, file)
    except ValidationError as e:
        return _page(request, session, user, form, errors=schema_errors(e))
    except AuthenticationError:
        raise
    except EdgetuneError as e:
        return _page(request, session, user, form, errors={field_of(e.param): e.message})
    if isinstance(result, PlanPublic):
        return _page(request, session, user, form, plan=result)
    return RedirectResponse(str(request.url_for("console_job", job_id=result.id)), status_code=303)
