"""Tool-calling rows: a tool and its arguments are sampled, the teacher phrases the user's request,
and the answer is the LFM call `<|tool_call_start|>[f(a="x")]<|tool_call_end|>` - correct by
construction, which is what makes a 135M teacher usable at all. Tool requests are phrased from
their arguments, not about a subject: no topics are planned."""

from __future__ import annotations

import random
import re
from typing import Any

from domain.job_config import SeedExample, TaskSpec
from domain.tool_calls import parse_tool_calls
from recipes.chat_data import TOOL_CALL_END, TOOL_CALL_START, to_lfm_tool_call
from synth import prompts
from synth.candidates import Candidate, Chunk, Run, chat_row, grounding_problem, notes, seed_for
from synth.filters import clean_text, text_problem
from synth.sampling import mention_text, sample
from synth.tasks.spec import SynthTask
from synth.teacher import ChatRequest


def lfm_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """`<|tool_call_start|>[name(a="x", n=3)]<|tool_call_end|>`, as LFM2 writes a call."""
    return to_lfm_tool_call([{"function": {"name": name, "arguments": arguments}}])


def candidates(run: Run, plan: Chunk) -> list[Candidate]:
    task = run.task
    tools = task.tool_schemas()
    calls = [
        (str(name), sample(tools[str(name)]["parameters"], random.Random(v.seed), run.plan.pools, str(name)))
        for name, v in plan
    ]
    requests = [
        ChatRequest(
            prompts.tool_request_messages(
                _action(tools[name]),
                mention_text(args),
                v,
                notes(run),
                seed_for(task, name, v.seed, seed_key),
            ),
            prompts.INSTRUCTION_MAX_TOKENS,
            prompts.TEMPERATURE,
            v.seed,
        )
        for (name, args), (_, v) in zip(calls, plan, strict=True)
    ]
    outputs = run.client.complete_many(requests, run.should_stop)
    out: list[Candidate] = []
    for (name, args), (_, v), raw in zip(calls, plan, outputs, strict=True):
        if raw is None:
            continue
        run.generated += 1
        text = clean_text(raw)
        problem = text_problem(text, meta=False) or grounding_problem(text, args)
        row = chat_row(task.description, text, lfm_tool_call(name, args))
        row["tools"] = task.tools
        out.append(Candidate(name, text, row, v, "tool_request", problem))
    return out


def _action(fn: dict[str, Any]) -> str:
    """What a tool does, as the object of "Rewrite as a request: <action> (...)": its
    description's first sentence, lower-cased, else its name in words (get_weather -> get weather)."""
    first = re.split(r"(?<=[.!?])\s", str(fn.get("description") or "").strip())[0].rstrip(".!? ")
    if not first:
        return re.sub(r"[_.]+", " ", fn["name"]).strip()
    return first[0].lower() + first[1:]


def keys(task: TaskSpec) -> list[str | None]:
    return list(task.tool_schemas())


def seed_key(task: TaskSpec, seed: SeedExample) -> str | None:  # noqa: ARG001 - a SeedKey
    """The tool a seed's call names."""
    calls = parse_tool_calls(seed.output) if isinstance(seed.output, str) else None
    return calls[0].name if calls else None


def row_problem(task: TaskSpec, row: dict[str, Any]) -> str | None:
    answer = str(row["messages"][-1].get("content") or "")
    # The markers are required: they are special tokens the runtime parses on, and a row without
    # them would teach the model to print a bare list.
    if not (answer.startswith(TOOL_CALL_START) and answer.endswith(TOOL_CALL_END)):
        return "tool_call_unparsed"
    if parse_tool_calls(answer) and row.get("tools") != task.tools:
        return "invalid_row"  # the model must see the tools it is taught to call
    return None


TASK = SynthTask(
    candidates,
    keys=keys,
    seed_key=seed_key,
    distribution="tool_distribution",
    topics=False,
    row_problem=row_problem,
)
