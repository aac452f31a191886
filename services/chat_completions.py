"""POST /v1/chat/completions: an org's fine-tuned GGUF answers through llama-cpp-python, in
OpenAI's shapes (services/schemas/chat.py), streamed or whole, and every request is metered.

Generation is blocking CPU work: callers run `complete` and each step of `stream` in a worker
thread. A stream generates one token per step, so a client that leaves stops it: the API closes
the generator, which releases the model and bills the tokens generated so far.

Defaults. Sampling fields the request leaves unset take the artifact's recommended sampling (its
manifest: greedy for classification, extraction and tool calling, as the gate scored it). The
grammar an artifact ships (its labels, output schema or tool calls) constrains the answer unless
the request says otherwise with `response_format` (`text`: none; `json_object` / `json_schema`:
that instead) or names a tool in `tool_choice`: an OpenAI client expects a valid answer, and that
grammar is what the gate's artifact score was measured under. Tool calls the model writes in LFM's
text form are returned as OpenAI `tool_calls` when they name tools of the request.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from sqlalchemy.orm import Session

from domain.tool_calls import parse_tool_calls
from eval.gguf_chat import render_gguf, tokenize_gguf
from eval.grammar import grammar_for, grammar_parses
from infra.db import session_scope
from infra.models import Org
from infra.price_book import price_book
from services import spend_budgets
from services.chat_models import ServedModel, resolve
from services.errors import InvalidRequest, PaymentRequired
from services.ledger import append_usage, usage_key
from services.model_cache import model_cache
from services.schemas.chat import (
    AssistantMessage,
    ChatCompletionChunkPublic,
    ChatCompletionCreate,
    ChatCompletionPublic,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
    ToolCallDelta,
    Usage,
)

STAGE = "inference"  # the ledger's stage for chat completions


def prepare(*, session: Session, org: Org, body: ChatCompletionCreate) -> ServedModel:
    """The model that answers, after the org's budget check: a 402 once the ledger has spent it."""
    remaining = spend_budgets.remaining_usd(session, org)
    if remaining is not None and remaining <= 0:
        raise PaymentRequired(
            f"the organization's budget is spent (${org.budget_usd:.4f}); chat completions are billed "
            "per token",
            code="org_budget_exceeded",
        )
    return resolve(session=session, org=org, model=body.model, target=body.target)


def _stays() -> bool:
    return False


def complete(
    served: ServedModel, body: ChatCompletionCreate, org_id: str, left: Callable[[], bool] = _stays
) -> ChatCompletionPublic:
    """One whole completion, metered. Generated token by token, so a client that has `left` (the
    API watches its connection) stops it; the tokens generated until then are billed."""
    completion_id, created = _new_id(), int(time.time())
    text, finish = "", None
    with model_cache().use(served.cache_key, served.path, served.n_ctx) as llm:
        prompt_tokens = _prompt_tokens(llm, served, body)
        parts = _generate(llm, served, body)
        try:
            for part in parts:
                raw = part["choices"][0]
                text, finish = text + (raw["delta"].get("content") or ""), raw.get("finish_reason") or finish
                if left():
                    break
        finally:  # under the model's lock: llama.cpp's generator ends before another request starts
            parts.close()
            counted = _usage(llm, prompt_tokens, text)
            meter(org_id, served, completion_id, counted)
    message, finish_reason = _answer(text, finish, body)
    return ChatCompletionPublic(
        id=completion_id,
        created=created,
        model=served.name,
        choices=[Choice(message=message, finish_reason=finish_reason)],
        usage=counted,
    )


def stream(
    served: ServedModel, body: ChatCompletionCreate, org_id: str
) -> Generator[ChatCompletionChunkPublic, None, None]:
    """The completion as chunks, one token per step; metered when it ends or is closed. A request
    with tools is generated whole first (its tool calls are known only at the end) and then sent
    as a role chunk, one content or tool-calls chunk and the finish."""
    if body.tools:
        whole = complete(served, body, org_id)
        yield from _chunks_of(whole, body)
        return
    completion_id, created = _new_id(), int(time.time())
    text, finish = "", None

    def chunk(delta: Delta, finish_reason: Any = None) -> ChatCompletionChunkPublic:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        return ChatCompletionChunkPublic(
            id=completion_id, created=created, model=served.name, choices=[choice]
        )

    with model_cache().use(served.cache_key, served.path, served.n_ctx) as llm:
        prompt_tokens = _prompt_tokens(llm, served, body)
        parts = _generate(llm, served, body)  # refusals (a bad schema) raise here
        try:  # from here on, what was generated is billed, also when the client leaves
            yield chunk(Delta(role="assistant", content=""))
            for part in parts:
                raw = part["choices"][0]
                piece, finish = raw["delta"].get("content") or "", raw.get("finish_reason") or finish
                text += piece
                if piece:
                    yield chunk(Delta(content=piece))
            yield chunk(Delta(), "length" if finish == "length" else "stop")
        finally:  # still under the model's lock: an evicted model is freed only once it is let go
            parts.close()
            counted = _usage(llm, prompt_tokens, text)
            meter(org_id, served, completion_id, counted)
    if body.stream_options and body.stream_options.include_usage:
        yield ChatCompletionChunkPublic(
            id=completion_id, created=created, model=served.name, choices=[], usage=counted
        )


def _chunks_of(
    whole: ChatCompletionPublic, body: ChatCompletionCreate
) -> Iterator[ChatCompletionChunkPublic]:
    message, choice = whole.choices[0].message, whole.choices[0]

    def frame(
        delta: Delta | None, finish: Any = None, usage: Usage | None = None
    ) -> ChatCompletionChunkPublic:
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]
        return ChatCompletionChunkPublic(
            id=whole.id, created=whole.created, model=whole.model, choices=choices, usage=usage
        )

    yield frame(Delta(role="assistant", content=""))
    if message.tool_calls:
        yield frame(
            Delta(
                tool_calls=[
                    ToolCallDelta(index=i, **c.model_dump()) for i, c in enumerate(message.tool_calls)
                ]
            )
        )
    elif message.content:
        yield frame(Delta(content=message.content))
    yield frame(Delta(), choice.finish_reason)
    if body.stream_options and body.stream_options.include_usage:
        yield frame(None, usage=whole.usage)


def _new_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def _generate(llm: Any, served: ServedModel, body: ChatCompletionCreate) -> Any:
    """llama-cpp-python's create_chat_completion as a stream of chunks, one token per step (its
    grammar built and checked first); a prompt over the context is a 400."""
    try:
        return llm.create_chat_completion(**_llama_kwargs(llm, served, body), stream=True)
    except ValueError as e:
        if "context window" not in str(e):
            raise
        raise InvalidRequest(
            f"the messages are longer than {served.name}'s context of {served.n_ctx} tokens ({e})",
            param="messages",
            code="context_length_exceeded",
        ) from None


def _llama_kwargs(llm: Any, served: ServedModel, body: ChatCompletionCreate) -> dict[str, Any]:
    s = served.sampling
    kwargs: dict[str, Any] = {
        "messages": _messages(body),
        "temperature": _pick(body.temperature, s.get("temperature"), 0.0),
        "top_p": _pick(body.top_p, s.get("top_p"), 1.0),
        "top_k": int(s.get("top_k") or 0),  # 0: the whole vocabulary, as OpenAI samples
        "min_p": float(s.get("min_p") or 0.0),
        "repeat_penalty": float(s.get("repetition_penalty") or 1.0),
        "frequency_penalty": body.frequency_penalty or 0.0,
        "presence_penalty": body.presence_penalty or 0.0,
        "max_tokens": body.completion_limit(),  # None: up to the end of the context
        "stop": body.stop,
        "seed": body.seed,
        "grammar": _grammar(llm, served, body),
    }
    if body.tools and body.tool_choice != "none":
        kwargs["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    return kwargs


def _pick(asked: float | None, recommended: Any, default: float) -> float:
    """The request's value, else the artifact's recommendation, else the default."""
    return asked if asked is not None else float(recommended if recommended is not None else default)


def _messages(body: ChatCompletionCreate) -> list[dict[str, Any]]:
    out = []
    for m in body.messages:
        # chat templates know system, user, assistant and tool; OpenAI's developer is a system turn
        row: dict[str, Any] = {
            "role": "system" if m.role == "developer" else m.role,
            "content": m.text() or "",
        }
        if m.name:
            row["name"] = m.name
        if m.tool_calls:
            row["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id:
            row["tool_call_id"] = m.tool_call_id
        out.append(row)
    return out


def _grammar(llm: Any, served: ServedModel, body: ChatCompletionCreate) -> Any:
    """The grammar this request decodes under (see the module docstring), checked against the
    model's vocabulary first: llama-cpp-python crashes the process on one that does not parse."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF

    fmt, param = body.response_format, "response_format"
    if isinstance(body.tool_choice, NamedToolChoice):
        tool = next((t for t in body.tools or [] if t.function.name == body.tool_choice.function.name), None)
        if tool is None:
            raise InvalidRequest("tool_choice names a function that is not in tools", param="tool_choice")
        text, param = _schema_grammar(tool.function.parameters), "tool_choice"
    elif fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_ if fmt.json_schema else {}
        text, param = _schema_grammar(schema), "response_format.json_schema"
    elif fmt is not None:
        text = JSON_GBNF if fmt.type == "json_object" else None
    else:
        text = None if body.tool_choice == "none" else served.grammar
    if text is None:
        return None
    if not grammar_parses(llm, text):
        raise InvalidRequest(f"{param}: llama.cpp cannot build a grammar from it", param=param)
    return LlamaGrammar.from_string(text, verbose=False)


def _schema_grammar(schema: dict[str, Any]) -> str | None:
    """JSON that follows `schema`, by the converter extraction artifacts ship with (strict JSON
    strings, local `$ref`s, the keywords it scores)."""
    try:
        return grammar_for("extraction", None, schema, None)
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise InvalidRequest(
            f"the JSON schema cannot be turned into a grammar: {e}", param="response_format"
        ) from None


def _answer(text: str, finish: str | None, body: ChatCompletionCreate) -> tuple[AssistantMessage, Any]:
    """The assistant message: tool calls when the text is calls to the request's tools (LFM's
    `[name(arg=...)]`, or the arguments JSON of a named tool_choice), else the text."""
    if isinstance(body.tool_choice, NamedToolChoice):
        call = _call(body.tool_choice.function.name, text)
        # cut short by max_tokens, the arguments are not whole JSON: say so, as OpenAI does
        return AssistantMessage(
            content=None, tool_calls=[call]
        ), "length" if finish == "length" else "tool_calls"
    names = {t.function.name for t in body.tools or []}
    calls = parse_tool_calls(text) if names and body.tool_choice != "none" else None
    if calls and all(c.name in names for c in calls):
        tool_calls = [_call(c.name, json.dumps(c.arguments)) for c in calls]
        return AssistantMessage(content=None, tool_calls=tool_calls), "tool_calls"
    return AssistantMessage(content=text), "length" if finish == "length" else "stop"


def _call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=f"call_{secrets.token_hex(12)}", function=FunctionCall(name=name, arguments=arguments))


def _prompt_tokens(llm: Any, served: ServedModel, body: ChatCompletionCreate) -> int:
    """The prompt's tokens as llama-cpp-python renders them (a stream reports no usage of its own);
    a prompt that leaves no room to answer is a 400 before anything is streamed."""
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    try:
        count = len(tokenize_gguf(llm, render_gguf(llm, _messages(body), tools)))
    except ValueError:  # a GGUF whose chat format is not its embedded template: llama.cpp checks
        return 0
    if count >= served.n_ctx:
        raise InvalidRequest(
            f"the messages are {count} tokens, over {served.name}'s context of {served.n_ctx}",
            param="messages",
            code="context_length_exceeded",
        )
    return count


def _usage(llm: Any, prompt_tokens: int, text: str) -> Usage:
    """Completion tokens counted by tokenizing the answer again (a llama.cpp stream reports none)."""
    completion = len(tokenize_gguf(llm, text)) if text else 0
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion
    )


def meter(org_id: str, served: ServedModel, completion_id: str, usage: Usage) -> None:
    """The request's tokens in the usage ledger, once per completion id, at the price book's rates;
    the rows carry the fine-tune's job, so usage by job shows each model's tokens."""
    rates = price_book().inference_1m_tokens
    with session_scope() as session:
        for unit, tokens, price in (
            ("input_1m_tokens", usage.prompt_tokens, rates.input),
            ("output_1m_tokens", usage.completion_tokens, rates.output),
        ):
            if tokens > 0:
                append_usage(
                    session,
                    org_id=org_id,
                    job_id=served.job_id,
                    stage=STAGE,
                    unit=unit,
                    quantity=tokens / 1_000_000,
                    unit_price=price,
                    key=usage_key(completion_id, STAGE, unit),
                )
