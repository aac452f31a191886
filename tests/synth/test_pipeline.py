"""synthesize() for every task type against the scripted teacher (tests/synth/fake_teacher.py
`task_script`): every kept row validates, nothing leaks between splits, every drop has its reason,
provenance is recorded, balancing holds, and the judge and the budgets stop what they should."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from domain.job_config import TaskSpec
from synth.filters import list_items, normalize
from synth.generate import SynthResult, binomial_tail, parse_score, synthesize
from synth.prompts import PROMPT_VERSION, TEMPLATE_VERSIONS
from synth.teacher import TeacherClient, TeacherSettings
from synth.validate import row_problem
from tests.synth.fake_teacher import FakeTeacher, Reply, chat, task_script

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather forecast for a city. Uses the national service.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
            },
            "required": ["city", "days"],
        },
    },
}
REMINDER = {
    "name": "create_reminder",  # the bare form is accepted and wrapped
    "description": "Create a reminder.",
    "parameters": {
        "type": "object",
        "properties": {"text": {"type": "string"}, "time": {"type": "string", "format": "time"}},
        "required": ["text", "time"],
    },
}
SPECS: dict[str, dict[str, Any]] = {
    "classification": {
        "type": "classification",
        "description": "Classify the urgency of a support ticket.",
        "labels": ["urgent", "normal"],
        "label_descriptions": {"urgent": "the customer cannot work at all"},
        "num_examples": 16,
        "seed_examples": [{"input": "The whole office is offline since this morning.", "output": "urgent"}],
    },
    "extraction": {
        "type": "extraction",
        "description": "Extract the customer's name and city from a support message.",
        "output_schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "city": {"type": "string"},
                "vip": {"type": "boolean"},
            },
            "required": ["name", "city"],
        },
        "num_examples": 12,
    },
    "tool_calling": {
        "type": "tool_calling",
        "description": "Help users with the weather and reminders.",
        "tools": [WEATHER, REMINDER],
        "num_examples": 12,
    },
    "chat": {
        "type": "chat",
        "description": "Answer short questions about cooking at home.",
        "constraints": ["Answers are under 80 words"],
        "seed_examples": [{"input": "How long do I boil an egg?"}, {"input": "Can I freeze cooked rice?"}],
        "num_examples": 8,
    },
}


def run(spec: dict[str, Any], seed: int = 5, **settings: Any) -> tuple[SynthResult, FakeTeacher]:
    task = TaskSpec.model_validate(spec)
    with FakeTeacher(task_script) as fake:
        opts = {"base_url": fake.base_url, "model": "fake-teacher", "backoff_base_s": 0.01, **settings}
        with TeacherClient(TeacherSettings.model_validate(opts)) as client:
            result = synthesize(task, client, seed=seed)
    return result, fake


def assert_valid(task: TaskSpec, result: SynthResult) -> None:
    """What every synthesis run must satisfy, whatever the teacher said."""
    report = result.report
    rows = result.train_rows + result.eval_rows
    assert result.train_rows and result.eval_rows
    assert [row_problem(task, r) for r in rows] == [None] * len(rows)
    users = [normalize(r["messages"][1]["content"]) for r in rows]
    assert len(set(users)) == len(users), "a duplicate within or across train and eval"
    assert report["generated"] == report["kept"] + sum(report["dropped_by_reason"].values())
    assert report["requested"] == report["generated"] + report["unanswered"]
    assert report["kept"] == len(rows) and report["type"] == task.type
    for row, split in [(r, "train") for r in result.train_rows] + [(r, "eval") for r in result.eval_rows]:
        p = row["provenance"]
        assert p["split"] == split and p["teacher_model"] == "fake-teacher" and p["seed"] == 5
        assert (
            p["prompt_version"] == PROMPT_VERSION
            and p["template_version"] == TEMPLATE_VERSIONS[p["template"]]
        )
    assert result.row_provenance == [r["provenance"] for r in rows]
    json.dumps(report)


def test_classification_is_balanced_and_uses_the_plan() -> None:
    result, fake = run(SPECS["classification"])
    task = TaskSpec.model_validate(SPECS["classification"])
    assert_valid(task, result)
    report = result.report
    assert report["version"] == 2 and report["planning"]["topics"] == [
        "Money matters",
        "Planning",
        "Travel days",
    ]
    assert report["label_distribution"] == {
        "urgent": {"train": 6, "eval": 2},
        "normal": {"train": 6, "eval": 2},
    }
    assert report["dropped_by_reason"]["duplicate"] >= 1
    prompts = [s.payload["messages"][-1]["content"] for s in fake.seen]
    # the label with a seed is asked for lists like it, with its description; the other one text
    # at a time about a planned sub-topic
    urgent = [p for p in prompts if "more urgent texts like these" in p]
    assert urgent and not any("Write a urgent one" in p for p in prompts)
    assert all(
        p.startswith("Examples of urgent texts:\n- The whole office is offline since this morning.\n")
        and p.endswith("one per line. It means: the customer cannot work at all.")
        for p in urgent
    )
    assert any("Write a normal one about" in p for p in prompts)
    rows = result.train_rows + result.eval_rows
    by_label = {
        label: [r["provenance"] for r in rows if r["messages"][2]["content"] == label]
        for label in ("urgent", "normal")
    }
    assert {p["template"] for p in by_label["urgent"]} == {"labelled_list"}
    assert not any("subject" in p or "style" in p for p in by_label["urgent"])  # not in its prompt
    assert {p["template"] for p in by_label["normal"]} == {"labelled_text"}
    assert any(" case " in p["subject"] for p in by_label["normal"])  # sub-topics used
    # a list request fills up to LIST_SIZE rows: fewer requests than rows asked for this label
    assert len(urgent) < sum(1 for p in by_label["urgent"])
    assert report["dropped_by_reason"]["seed_copy"] >= 1 and report["unanswered"] >= 1


def test_extraction_answers_are_sampled_valid_and_stated_in_the_text() -> None:
    result, _ = run(SPECS["extraction"])
    task = TaskSpec.model_validate(SPECS["extraction"])
    assert_valid(task, result)
    assert result.report["dropped_by_reason"]["value_not_in_text"] >= 1
    assert result.report["planning"]["value_pools"] == {"name": 6, "city": 6}
    for row in result.train_rows + result.eval_rows:
        system, user, answer = (m["content"] for m in row["messages"])
        value = json.loads(answer)
        assert {"name", "city"} <= set(value) and value["name"] in user and value["city"] in user
        assert system.startswith(task.description) and '"required":["name","city"]' in system


def test_tool_calls_are_correct_by_construction_and_balanced_per_tool() -> None:
    result, fake = run(SPECS["tool_calling"])
    task = TaskSpec.model_validate(SPECS["tool_calling"])
    assert_valid(task, result)
    report = result.report
    # 25% of 12 is 3 held out, spread by largest remainder (1.5 each: the first tool takes the odd one)
    assert report["tool_distribution"] == {
        "get_weather": {"train": 4, "eval": 2},
        "create_reminder": {"train": 5, "eval": 1},
    }
    assert report["dropped_by_reason"]["scaffold_echo"] >= 1
    assert report["planning"]["requests"] == 2  # one value list per free-text argument, no topics
    for row in result.train_rows + result.eval_rows:
        assert row["tools"] == task.tools
        call = row["messages"][2]["content"]
        assert call.startswith("<|tool_call_start|>[") and call.endswith(")]<|tool_call_end|>")
    asked = [s.payload["messages"][-1]["content"] for s in fake.seen]
    # the tool's description (first sentence) is what the teacher phrases
    assert any(": get the weather forecast for a city (city: " in p for p in asked)


def test_chat_self_instructs_from_the_seeds_with_a_difficulty_spread() -> None:
    result, fake = run(SPECS["chat"])
    task = TaskSpec.model_validate(SPECS["chat"])
    assert_valid(task, result)
    system = result.train_rows[0]["messages"][0]["content"]
    assert system == "Answer short questions about cooking at home.\nRules:\n- Answers are under 80 words"
    asked = [
        s.payload["messages"][-1]["content"] for s in fake.seen if "question or request" in str(s.payload)
    ]
    assert all("Examples of what users send:\n- " in p for p in asked)
    assert {r["provenance"]["difficulty"] for r in result.train_rows + result.eval_rows} <= {
        "simple",
        "specific, detailed",
        "tricky, multi-part",
    }


def test_seed_copies_are_dropped_as_such() -> None:
    seed = "This exact request text comes back again and again."  # what task_script repeats
    result, _ = run({**SPECS["chat"], "seed_examples": [{"input": seed}]})
    assert result.report["dropped_by_reason"]["seed_copy"] >= 1
    assert "duplicate" not in result.report["dropped_by_reason"]  # copies of a seed count apart
    assert all(normalize(seed) != normalize(r["messages"][1]["content"]) for r in result.train_rows)


def test_the_judge_drops_low_scores_and_records_the_rest() -> None:
    spec = {**SPECS["chat"], "rubric": "The answer is correct and practical.", "judge_min_score": 3}
    result, fake = run(spec)
    assert_valid(TaskSpec.model_validate(spec), result)
    judge = result.report["judge"]
    assert judge["requests"] >= result.report["kept"] and judge["mean_kept_score"] == 4
    assert result.report["dropped_by_reason"]["judge_low_score"] >= 1
    assert {r["provenance"]["judge_score"] for r in result.train_rows + result.eval_rows} == {4}
    judged = [s.payload for s in fake.seen if "Rate the assistant" in s.payload["messages"][-1]["content"]]
    assert judged and all(p["temperature"] == 0.0 for p in judged)


def test_cost_budget_stops_the_run_and_is_reported() -> None:
    # $0.00005 at $0.05 per 1k tokens buys 1,000 tokens: the plan and a few rows of 16 (each
    # request reserves its max_tokens plus its prompt estimate before it is sent).
    result, fake = run(SPECS["classification"], max_cost_usd=0.00005, usd_per_1k_tokens=0.05)
    assert result.report["stopped"] == "budget"
    assert result.usage.total_tokens <= 1000 and result.report["cost_usd"] <= 0.00005
    assert result.report["cost_usd"] == round(result.usage.total_tokens * 0.05 / 1000, 6)


def test_same_seed_same_rows_for_every_type() -> None:
    for spec in SPECS.values():
        first, _ = run(spec, seed=9)
        again, _ = run(spec, seed=9)
        assert first.train_rows == again.train_rows and first.eval_rows == again.eval_rows


def test_parse_score() -> None:
    assert [parse_score(t) for t in ("4", "Rating: 5", "3/5 because", "10", "none")] == [4, 5, 3, None, None]


def test_version_1_bodies_keep_the_built_in_subjects_and_send_no_planning_requests() -> None:
    spec = {"description": "Classify the urgency of a support ticket.", "labels": ["urgent", "normal"]}
    result, fake = run({**spec, "num_examples": 8})  # num_examples is a v1 key too
    assert result.report["version"] == 1 and result.report["planning"]["requests"] == 0
    assert not any("topics of this task" in str(s.payload) for s in fake.seen)


def test_sampled_values_satisfy_their_schema() -> None:
    from domain.json_schema import schema_errors
    from synth.sampling import sample

    schema = {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
                    "total": {"type": "number", "minimum": 5, "maximum": 9},
                    "when": {"type": "string", "format": "date"},
                },
                "required": ["items", "total", "when"],
            },
            "priority": {"enum": ["low", "high"]},
            "count": {"type": ["null", "integer"], "exclusiveMinimum": 0},
            "contact": {"type": "string", "format": "email"},
        },
        "required": ["order", "priority", "count"],
    }
    for seed in range(200):
        value = sample(schema, random.Random(seed), {"order.items[]": ["tea", "rice", "salt"]})
        assert schema_errors(value, schema) == [], value
        assert 2 <= len(value["order"]["items"]) <= 4 and value["count"] >= 1


def _round_trip_script(
    formats: list[Any] | None = None, wrong_every: int = 3, seed_examples: list[dict[str, str]] | None = None
) -> tuple[Any, dict[str, str]]:
    """task_script, plus answers to the round-trip requests (the row's system turn, "Answer with
    exactly one of: ..."): the label the text was written for, except for request seeds divisible
    by 3, which get the other label: a teacher that disagrees with a third of its own rows. Asked
    for an object of a schema (response_format), it answers `{"label": ...}` as a server held to
    the schema does, and each request's response_format goes to `formats`."""
    # normalised text -> the label it was written for (the customer's seeds: theirs)
    seed_examples = SPECS["classification"]["seed_examples"] if seed_examples is None else seed_examples
    written_for = {normalize(s["input"]): s["output"] for s in seed_examples}
    seeds = set(written_for)

    def script(n: int, payload: dict[str, Any]) -> Any:
        seed = int(payload.get("seed", n))
        prompt = payload["messages"][-1]["content"]
        if label := re.search(r"Write a (\w+) one about|Write \d+ more (\w+) texts like these", prompt):
            reply = task_script(n, payload)
            content = json.loads(reply.body)["choices"][0]["message"]["content"]
            texts = list_items(content) if label.group(2) else [content]
            written_for.update({normalize(t): label.group(1) or label.group(2) for t in texts})
            return reply
        system = payload["messages"][0]["content"]
        if payload["messages"][0]["role"] == "system" and "Answer with exactly one of:" in system:
            label_for = written_for[normalize(prompt)]
            other = "normal" if label_for == "urgent" else "urgent"
            is_seed = normalize(prompt) in seeds  # the scripted teacher labels the customer's right
            answer = other if wrong_every and seed % wrong_every == 0 and not is_seed else label_for
            if formats is not None:
                formats.append(payload.get("response_format"))
            if payload.get("response_format"):
                return chat(json.dumps({"label": answer}), 60, 6)
            return chat(f"{answer}.", 60, 2)
        return task_script(n, payload)

    return script, written_for


def _run_with(spec: dict[str, Any], script: Any, **teacher: Any) -> SynthResult:
    task = TaskSpec.model_validate(spec)
    with FakeTeacher(script) as fake:
        opts = {"base_url": fake.base_url, "model": "fake-teacher", "backoff_base_s": 0.01, **teacher}
        with TeacherClient(TeacherSettings.model_validate(opts)) as client:
            return synthesize(task, client, seed=5)


@pytest.mark.parametrize("dialect", ["json_schema", "json_object", "off"])
def test_round_trip_measures_agreement_and_filter_drops_the_rows_the_teacher_labels_otherwise(
    dialect: str,
) -> None:
    formats: list[Any] = []
    spec = {**SPECS["classification"], "round_trip": "measure"}
    measured = _run_with(spec, _round_trip_script(formats)[0], structured_output=dialect)
    rt = measured.report["round_trip"]
    assert rt["mode"] == "measure" and rt["requests"] >= rt["checked"] > 0
    assert rt["structured_output"] == dialect
    # each round trip held to one of the labels, in the field this teacher's server reads
    labels = {"type": "string", "enum": ["urgent", "normal"]}
    schema = {"type": "object", "properties": {"label": labels}, "required": ["label"]}
    schema["additionalProperties"] = False
    expected = {
        "json_schema": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        "json_object": {"type": "json_object", "schema": schema},
        "off": None,
    }[dialect]
    # the rows' round trips, then the seed's (rows known to be right), each held the same way
    assert rt["seeds"] == {"checked": 1, "agreed": 1, "agreement_rate": 1.0, "above_chance_p_value": 0.5}
    assert len(formats) == rt["requests"] + 1 and all(f == expected for f in formats)
    assert 0 < rt["agreed"] < rt["checked"] and rt["agreement_rate"] == round(rt["agreed"] / rt["checked"], 4)
    assert "round_trip_disagrees" not in measured.report["dropped_by_reason"]
    kept_seeds = [r["provenance"]["request_seed"] for r in measured.train_rows + measured.eval_rows]
    assert any(s % 3 == 0 for s in kept_seeds)  # measuring keeps the rows the teacher disagreed with

    spec = {**SPECS["classification"], "round_trip": "filter"}
    filtered = _run_with(spec, _round_trip_script()[0], structured_output=dialect)
    assert_valid(TaskSpec.model_validate(spec), filtered)
    report = filtered.report
    disagreed = report["round_trip"]["checked"] - report["round_trip"]["agreed"]
    assert disagreed > 0 and report["dropped_by_reason"]["round_trip_disagrees"] == disagreed
    assert all(r["provenance"]["request_seed"] % 3 != 0 for r in filtered.train_rows + filtered.eval_rows)
    assert report["label_distribution"] == {  # the next rounds made up the rows dropped
        "urgent": {"train": 6, "eval": 2},
        "normal": {"train": 6, "eval": 2},
    }


def test_a_teacher_that_refuses_the_response_format_is_asked_by_the_prompt_alone() -> None:
    """A server that reads another form of response_format answers 422 (as llama-cpp-python's
    does to OpenAI's json_schema): the round trip asks again without it, and so for the rest of
    the run, and the report says so."""
    prose, _ = _round_trip_script()
    refused: list[int] = []

    def script(n: int, payload: dict[str, Any]) -> Any:
        if "response_format" in payload:
            refused.append(n)
            return Reply(422, b'{"detail": "response_format.type: not json_object"}')
        return prose(n, payload)

    rt = _run_with({**SPECS["classification"], "round_trip": "measure"}, script).report["round_trip"]
    assert rt["structured_output"] == "json_schema" and rt["structured_output_refused"] is True
    assert rt["checked"] == rt["requests"] > 0 and 0 < rt["agreed"] < rt["checked"]
    assert 1 <= len(refused) <= 2  # only the requests in flight before the first refusal (concurrency 2)


def test_round_trip_says_when_the_teacher_agrees_no_more_than_a_guess() -> None:
    """A teacher that answers "urgent" to every row agrees with about half of two labels' rows:
    the report says it cannot be told from a guesser. One that always agrees can."""
    spec = {**SPECS["classification"], "round_trip": "measure"}

    def guesser(n: int, payload: dict[str, Any]) -> Any:
        if "Answer with exactly one of:" in payload["messages"][0]["content"]:
            return chat(json.dumps({"label": "urgent"}), 60, 6)
        return task_script(n, payload)

    rt = _run_with(spec, guesser).report["round_trip"]
    assert rt["chance_rate"] == 0.5 and 0 < rt["agreed"] < rt["checked"]
    assert rt["above_chance_p_value"] == round(binomial_tail(rt["agreed"], rt["checked"], 0.5), 4) >= 0.05
    assert f"agreed with {rt['agreed']} of {rt['checked']} rows" in rt["note"]

    rt = _run_with(spec, _round_trip_script(wrong_every=0)[0]).report["round_trip"]
    assert rt["agreed"] == rt["checked"] >= 5 and rt["above_chance_p_value"] < 0.05 and "note" not in rt


URGENCY_SEEDS = [
    {"input": "The whole office is offline since this morning.", "output": "urgent"},
    {"input": "Nobody can log in and the payroll run is today.", "output": "urgent"},
    {"input": "Our only server is down and customers cannot order.", "output": "urgent"},
    {"input": "Could you add a dark mode to the dashboard some day?", "output": "normal"},
    {"input": "The export button label has a small typo in it.", "output": "normal"},
    {"input": "How do I change the colour of my profile picture frame?", "output": "normal"},
]


def _seed_aware(right_on_seeds: bool) -> Any:
    """A teacher that answers "urgent" to every generated row (a guess) and, to the customer's
    seeds, their own label (`right_on_seeds`) or "urgent" too."""
    seed_labels = {normalize(s["input"]): s["output"] for s in URGENCY_SEEDS}

    def script(n: int, payload: dict[str, Any]) -> Any:
        if "Answer with exactly one of:" in payload["messages"][0]["content"]:
            text = normalize(payload["messages"][-1]["content"])
            label = seed_labels.get(text, "urgent") if right_on_seeds else "urgent"
            return chat(json.dumps({"label": label}), 60, 6)
        return task_script(n, payload)

    return script


def test_round_trip_reads_the_rows_agreement_against_the_customers_own_examples() -> None:
    """Six seeds with their labels are asked back as rows known to be right: a teacher that gets
    them right but guesses on the rows points at the rows; one that guesses on both cannot judge.
    The seeds only read a guess-like agreement with the rows: with the rows above chance, no note."""
    spec = {**SPECS["classification"], "round_trip": "measure", "seed_examples": URGENCY_SEEDS}
    rt = _run_with(spec, _seed_aware(right_on_seeds=True)).report["round_trip"]
    assert rt["seeds"]["checked"] == rt["seeds"]["agreed"] == 6 and rt["seeds"]["above_chance_p_value"] < 0.05
    assert rt["above_chance_p_value"] >= 0.05 and rt["note"].endswith(
        "though it agreed with 6 of your 6 own examples: the rows, not the teacher, are the likely fault"
    )
    rt = _run_with(spec, _seed_aware(right_on_seeds=False)).report["round_trip"]
    seeds = rt["seeds"]
    assert (seeds["checked"], seeds["agreed"], seeds["agreement_rate"]) == (6, 3, 0.5)
    assert seeds["above_chance_p_value"] == pytest.approx(42 / 64, abs=1e-4)  # P(3 or more of 6 at 1/2)
    assert rt["note"].endswith(
        ", nor with 3 of your 6 own examples (p = 0.66): this teacher cannot judge the task, so the round "
        "trip says nothing of the rows"
    )
    assert rt["note"].startswith(
        f"the teacher agreed with {rt['agreed']} of {rt['checked']} rows, no more often"
    )
    # a teacher right on the rows has no note, whatever it did with the seeds
    spec_right = {**spec, "seed_examples": URGENCY_SEEDS[:1] + URGENCY_SEEDS[3:4]}
    right = _round_trip_script(wrong_every=0, seed_examples=spec_right["seed_examples"])[0]
    rt = _run_with(spec_right, right).report["round_trip"]
    assert rt["agreed"] == rt["checked"] and rt["seeds"]["checked"] == 2 and "note" not in rt
    # without round_trip nothing is asked back, the seeds included
    off = _run_with({**spec, "round_trip": "off"}, _seed_aware(right_on_seeds=True)).report
    assert "round_trip" not in off


def test_binomial_tail() -> None:
    assert binomial_tail(0, 7, 0.3) == pytest.approx(1.0)
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    # 12 or more of 25 at one in three: the bundled teacher on sentiment (docs/benchmarks.md)
    assert binomial_tail(12, 25, 1 / 3) == pytest.approx(0.0918, abs=1e-4)
    # a dataset's largest check (5000 rows) without overflow: half agreeing at one in two, and far
    # above one in four
    assert binomial_tail(2500, 5000, 0.5) == pytest.approx(0.5056, abs=1e-3)
    assert binomial_tail(2500, 5000, 0.25) < 1e-100


def _extraction_round_trip_script(schemas: list[Any]) -> Any:
    """task_script, plus answers to the extraction round-trip requests (the row's system turn,
    "Reply with a JSON object ..."): the facts the text was written to mention, read back from the
    writer's prompt, except for request seeds divisible by 3, whose city comes back wrong."""
    facts: dict[int, dict[str, Any]] = {}  # each round trip's response_format schema goes to `schemas`

    def script(n: int, payload: dict[str, Any]) -> Any:
        seed = int(payload.get("seed", n))
        prompt = payload["messages"][-1]["content"]
        if mention := re.search(r"must mention (.*?)\.(?: |$)", prompt):
            pairs = dict(part.split(": ", 1) for part in mention.group(1).split(", "))
            facts[seed] = {k: {"yes": True, "no": False}.get(v, v) for k, v in pairs.items()}
        if "Reply with a JSON object" in payload["messages"][0]["content"]:
            schemas.append(payload.get("response_format", {}).get("json_schema", {}).get("schema"))
            answer = dict(facts[seed])
            if seed % 3 == 0:
                answer["city"] = "Atlantis"
            return chat(json.dumps(answer), 120, 20)
        return task_script(n, payload)

    return script


def test_extraction_round_trip_agrees_only_when_every_field_comes_back() -> None:
    schemas: list[Any] = []
    measured = _run_with(
        {**SPECS["extraction"], "round_trip": "measure"}, _extraction_round_trip_script(schemas)
    )
    rt = measured.report["round_trip"]
    assert rt["mode"] == "measure" and rt["requests"] >= rt["checked"] > 0
    assert 0 < rt["agreed"] < rt["checked"] and rt["agreement_rate"] == round(rt["agreed"] / rt["checked"], 4)

    spec = {**SPECS["extraction"], "round_trip": "filter"}
    filtered = _run_with(spec, _extraction_round_trip_script(schemas))
    assert_valid(TaskSpec.model_validate(spec), filtered)
    report = filtered.report
    disagreed = report["round_trip"]["checked"] - report["round_trip"]["agreed"]
    assert disagreed > 0 and report["dropped_by_reason"]["round_trip_disagrees"] == disagreed
    # every row the teacher got a field of wrong is gone; the kept ones were all read back whole
    assert all(r["provenance"]["request_seed"] % 3 != 0 for r in filtered.train_rows + filtered.eval_rows)
    assert report["kept"] == SPECS["extraction"]["num_examples"]  # later rounds made up the drops
    # each round trip held to the task's own schema, as OpenAI's structured outputs read it
    assert schemas and all(s == SPECS["extraction"]["output_schema"] for s in schemas)


def test_round_trip_measures_by_default_and_not_for_tool_calls_or_chat() -> None:
    assert TaskSpec.model_validate(SPECS["classification"]).round_trip == "measure"
    assert "round_trip" not in run({**SPECS["classification"], "round_trip": "off"})[0].report
    assert TaskSpec.model_validate({**SPECS["extraction"], "round_trip": "filter"}).round_trips
    for kind in ("tool_calling", "chat"):
        assert not TaskSpec.model_validate({**SPECS[kind], "round_trip": "filter"}).round_trips


def test_extraction_and_tool_calling_writers_see_the_customers_seeds() -> None:
    ask = "My name is Ann Berg and I write from Oslo about my order."
    extraction = {**SPECS["extraction"], "seed_examples": [{"input": ask}]}
    tool_seeds = [
        {
            "input": "Will it rain in Oslo over the next two days?",
            "output": '[get_weather(city="Oslo", days=2)]',
        },
        {
            "input": "Remind me to call mum at 18:00.",
            "output": '[create_reminder(text="call mum", time="18:00")]',
        },
    ]
    tools = {**SPECS["tool_calling"], "seed_examples": tool_seeds}
    _, fake = run(extraction)
    writers = [
        m["content"] for s in fake.seen for m in s.payload["messages"] if "must mention" in m["content"]
    ]
    assert writers and all(f'For example: "{ask}" Write a different one.' in w for w in writers)
    _, fake = run(tools)
    requests = [s.payload["messages"][-1]["content"] for s in fake.seen]
    weather = [r for r in requests if r.startswith("Rewrite as") and "forecast" in r]
    reminders = [r for r in requests if r.startswith("Rewrite as") and "reminder" in r]
    assert weather and reminders
    # each request shows the seed that calls the same tool
    assert all(tool_seeds[0]["input"] in r for r in weather) and all(
        tool_seeds[1]["input"] in r for r in reminders
    )
