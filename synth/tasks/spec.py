"""What synthesis needs from one task type (synth/tasks/<type>.py builds one of these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domain.job_config import SeedExample, TaskSpec
from synth.candidates import Candidate, Chunk, Run


def no_key(task: TaskSpec, seed: SeedExample) -> str | None:  # noqa: ARG001 - a SeedKey
    return None


def one_key(task: TaskSpec) -> list[str | None]:  # noqa: ARG001 - a SynthTask.keys
    return [None]


@dataclass(frozen=True)
class SynthTask:
    # A chunk of planned requests -> candidate rows (the teacher asked, each row built and
    # checked); counts `run.generated` and may count drops in `run.dropped`.
    candidates: Callable[[Run, Chunk], list[Candidate]]
    # What rows are balanced on (synth/generate.py targets_for): the labels, the tools' names, or
    # [None] for one pool; and which of them a customer's seed example answers with.
    keys: Callable[[TaskSpec], list[str | None]] = one_key
    seed_key: Callable[[TaskSpec, SeedExample], str | None] = no_key
    # The report's per-key counts (train / eval) are listed under this name, when keys are named.
    distribution: str | None = None
    # Version-2 tasks ask the teacher for topics and sub-topics to write about; a type phrased from
    # sampled arguments (tool calls) does not.
    topics: bool = True
    # Version-2 requests spread over difficulty levels (chat: a reply's length and depth vary).
    spread_difficulty: bool = False
    # What this type checks of a row beyond a valid answer (synth/validate.py row_problem).
    row_problem: Callable[[TaskSpec, dict[str, Any]], str | None] | None = None
    # The round trip (domain/lists.py TASKS says which types have one): the teacher's answer's
    # token budget, the JSON Schema its answer is held to (sent as the teacher's settings say), and
    # whether it agrees with the row (its key, the row).
    round_trip_tokens: int = 0
    round_trip_schema: Callable[[TaskSpec], dict[str, Any] | None] | None = None
    # How often a teacher guessing at random would agree (one label of n), where that is known:
    # the dataset report then says whether the agreement is above chance.
    round_trip_chance: Callable[[TaskSpec], float] | None = None
    agrees: Callable[[TaskSpec, str, str | None, dict[str, Any]], bool] | None = None
    # A customer's seed with its answer as a row of this type (None without an answer): the round
    # trip asks the teacher these too, as rows known to be right, so the report can say whether
    # the teacher can judge the task at all.
    seed_row: Callable[[TaskSpec, SeedExample], dict[str, Any] | None] | None = None
