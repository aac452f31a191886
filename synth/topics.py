"""Planning before any row is written: topics and sub-topics for diversity, value lists for fields.

NeMo Curator's pattern: one request lists the task's topics, one per topic lists its sub-topics,
and every row is then asked "about" a sub-topic, so a thousand rows do not all circle the same
three subjects. Free-text fields of a schema (a tool's `city`, an extracted `product`) get one
request each for realistic values (`synth.sampling` draws from them).

A weak teacher lists badly: numbering, headings, whole sentences, repeats. `parse_list` keeps
short distinct lines, and every list falls back to built-in values when too little survives, so
planning never stops a run.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from domain.job_config import TaskSpec
from synth import prompts
from synth.filters import label_leak, normalize
from synth.sampling import field_words, string_fields
from synth.teacher import ChatRequest, StopFn, TeacherClient

MAX_TOPICS = 8
SUBTOPICS_PER_TOPIC = 5
VALUES_PER_FIELD = 8
MAX_POOL_FIELDS = 16  # one request each; a schema with more free-text fields uses fallbacks
MIN_SUBJECTS = 4  # fewer sub-topics than this and the built-in subjects are mixed in
MIN_POOL = 3  # fewer listed values than this and the field uses built-in values (synth.sampling)

_MARKER = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•#]+|[a-z]\))\s*", re.IGNORECASE)
_CHATTER = re.compile(r"\b(?:here (?:are|is)|sure|certainly|topics?|sub-topics?|list)\b", re.IGNORECASE)


@dataclass
class Plan:
    """What the rows will be about: (topic, sub-topic) subjects and value pools by field path."""

    subjects: list[tuple[str | None, str]]
    pools: dict[str, list[str]] = field(default_factory=dict)
    requests: int = 0  # planning requests sent (not counted in the rows' requested/generated)


def parse_list(text: str, max_words: int = 8, exclude: set[str] | None = None) -> list[str]:
    """Short distinct items from a listed answer: markers, quotes, "(notes)" and "Topic:
    explanation" tails removed; when some lines are numbered or bulleted, only those count.
    Lines that are chatter ("Here are 5 topics:"), longer than max_words, or (normalised) in
    `exclude` are dropped."""
    lines = text.splitlines()
    if marked := [line for line in lines if _MARKER.match(line)]:
        lines = marked
    items: list[str] = []
    for line in lines:
        item = re.sub(r"\s*\([^)]*\)", "", _MARKER.sub("", line)).strip().strip("\"'“”*`").strip()
        head, sep, _ = item.partition(":")
        if sep and 0 < len(head.split()) <= max_words:
            item = head.strip()
        item = item.rstrip(".,;!")
        if not item or len(item.split()) > max_words or len(item) > 80 or _CHATTER.search(item):
            continue
        if exclude and normalize(item) in exclude:
            continue
        if item.lower() not in {i.lower() for i in items}:
            items.append(item)
    return items


def plan_subjects(task: TaskSpec, client: TeacherClient, rng: random.Random, should_stop: StopFn) -> Plan:
    """Topics, then sub-topics per topic; version 1 tasks use the built-in subjects (no requests).

    About sqrt(n) topics (3 for 8 rows, 8 from 64 rows) of 5 sub-topics each: 8 rows get 15
    subjects for 4 requests, 5,000 rows get 40 subjects, each then crossed with 8 styles and 3
    difficulties in the prompts.
    """
    if task.version == 1:
        return Plan([(None, s) for s in prompts.SUBJECTS])
    n_topics = min(MAX_TOPICS, max(3, math.ceil(math.sqrt(task.num_examples))))
    ask = ChatRequest(
        prompts.topics_messages(task.description, n_topics),
        prompts.LIST_MAX_TOKENS,
        prompts.LIST_TEMPERATURE,
        rng.randrange(2**31),
    )
    topics = parse_list(client.complete_many([ask], should_stop)[0] or "", max_words=6)[:n_topics]
    asks = [
        ChatRequest(
            prompts.subtopics_messages(task.description, topic, SUBTOPICS_PER_TOPIC),
            prompts.LIST_MAX_TOKENS,
            prompts.LIST_TEMPERATURE,
            rng.randrange(2**31),
        )
        for topic in topics
    ]
    answers = client.complete_many(asks, should_stop)
    subjects: list[tuple[str | None, str]] = [
        (topic, sub)
        for topic, out in zip(topics, answers, strict=True)
        for sub in parse_list(out or "", max_words=8)[:SUBTOPICS_PER_TOPIC]
        # "Write a negative one about Positive reviews" can only end as a label leak.
        if not label_leak(sub, task.labels or [])
    ]
    if len(subjects) < MIN_SUBJECTS:
        subjects += [(None, s) for s in prompts.SUBJECTS]
    return Plan(subjects, requests=1 + len(asks))


def value_pools(
    task: TaskSpec, client: TeacherClient, rng: random.Random, should_stop: StopFn
) -> tuple[dict[str, list[str]], int]:
    """Teacher-listed values for each free-text field of the output schema or the tools'
    parameters, keyed by field path (`get_weather.city`); returns (pools, requests sent)."""
    fields: list[tuple[str, str]] = []
    if task.output_schema is not None:
        fields += string_fields(task.output_schema)
    for name, fn in task.tool_schemas().items():
        fields += string_fields(fn["parameters"], name)
    fields = fields[:MAX_POOL_FIELDS]
    asks = [
        ChatRequest(
            prompts.value_list_messages(task.description, _thing(path, about), VALUES_PER_FIELD),
            prompts.LIST_MAX_TOKENS,
            prompts.LIST_TEMPERATURE,
            rng.randrange(2**31),
        )
        for path, about in fields
    ]
    answers = client.complete_many(asks, should_stop) if asks else []
    # A weak teacher lists the field names themselves ("name", "city"): those are not values.
    names = {normalize(field_words(path)) for path, _ in fields}
    pools = {
        path: parse_list(out or "", max_words=5, exclude=names)
        for (path, _), out in zip(fields, answers, strict=True)
    }
    return {path: values for path, values in pools.items() if len(values) >= MIN_POOL}, len(asks)


def _thing(path: str, about: str) -> str:
    return about.strip().rstrip(".") or f"a {field_words(path)}"
