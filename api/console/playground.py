"""The playground: one prompt answered by a fine-tune and, beside it, by the base it was tuned from,
each through the same service the REST `POST /v1/chat/completions` calls (its GGUF in llama.cpp,
its grammar and recommended sampling by default, metered in the ledger). A page of the signed-in
org only: a model that is not the org's is the API's 404, shown where the answer would be."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from sqlalchemy.orm import Session

from api.console import auth
from api.console.errors import ConsoleRoute
from api.console.pages import render
from api.deps import SessionDep
from infra.models import Org
from services import chat_completions, jobs
from services.errors import AuthenticationError, EdgetuneError
from services.schemas.chat import ChatCompletionCreate, ChatCompletionPublic

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
MAX_MODELS = 100  # the org's latest succeeded jobs offered in the model list
DEFAULT_MAX_TOKENS = 64


@dataclass
class Answer:
    model: str
    role: str  # "fine-tune" or "base"
    text: str = ""
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def _models(session: Session, org: Org) -> list[tuple[str, str]]:
    """(fine_tuned_model, base) of the org's jobs that published a model, newest first."""
    rows, _ = jobs.list_jobs(session=session, org=org, after=None, limit=MAX_MODELS)
    return [(j.fine_tuned_model, j.model) for j in rows if j.status == "succeeded" and j.fine_tuned_model]


def _text(out: ChatCompletionPublic) -> str:
    message = out.choices[0].message
    calls = [f"{c.function.name}({c.function.arguments})" for c in message.tool_calls or []]
    return "\n".join([message.content or "", *calls]).strip()


def _answer(session: Session, org: Org, model: str, role: str, prompt: str, max_tokens: int) -> Answer:
    answer = Answer(model=model, role=role)
    try:
        body = ChatCompletionCreate.model_validate(
            {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        )
        served = chat_completions.prepare(session=session, org=org, body=body)
        started = time.perf_counter()
        out = chat_completions.complete(served, body, org.id)
    except AuthenticationError:
        raise
    except EdgetuneError as e:  # this side cannot answer (gate failed, spent budget, ...): say why
        answer.error = e.message
        return answer
    answer.seconds = time.perf_counter() - started
    answer.text, answer.model = _text(out), out.model
    answer.prompt_tokens, answer.completion_tokens = out.usage.prompt_tokens, out.usage.completion_tokens
    return answer


def _page(
    request: Request, session: Session, user: auth.ConsoleUser, fields: dict[str, object], **extra: object
) -> Response:
    context = {"csrf": user.csrf, "models": _models(session, user.org), "fields": fields, **extra}
    return render(request, "playground.html", context, status_code=400 if extra.get("error") else 200)


@router.get("/playground", name="console_playground")
def playground_page(
    request: Request,
    session: SessionDep,
    user: auth.ConsoleUserDep,
    model: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    fields = {"model": model, "prompt": "", "max_tokens": DEFAULT_MAX_TOKENS, "compare_base": True}
    return _page(request, session, user, fields)


@router.post("/playground", name="console_playground_submit")
def playground_submit(
    request: Request,
    session: SessionDep,
    user: auth.CheckedUserDep,
    model: Annotated[str, Form(max_length=512)] = "",
    prompt: Annotated[str, Form(max_length=16_000)] = "",
    max_tokens: Annotated[int, Form(ge=1, le=1024)] = DEFAULT_MAX_TOKENS,
    compare_base: Annotated[bool, Form()] = False,
) -> Response:
    fields = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "compare_base": compare_base}
    if not prompt.strip():
        return _page(request, session, user, fields, error="Write a prompt for the models to answer.")
    tuned = _answer(session, user.org, model, "fine-tune", prompt, max_tokens)
    answers = [tuned]
    base = dict(_models(session, user.org)).get(model)
    if compare_base and base is not None:
        answers.append(_answer(session, user.org, base, "base", prompt, max_tokens))
    return _page(request, session, user, fields, answers=answers)
