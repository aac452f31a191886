"""Every prompt synthesis sends, in one readable place.

Bump PROMPT_VERSION whenever any text here changes: it is recorded in each synthesis report, so a
dataset (and the model trained on it) can be traced to the prompts that produced it.

The offline teacher is SmolLM2-135M-Instruct, a very small model. What worked with it (tried by
hand on sentiment and support-routing tasks): a short, concrete request; the label used as an
adjective ("Write a negative one about ..."); a low max_tokens. What did not: abstract framing ("an
input whose answer is X"), a one-shot example from another domain (it copies the example's content;
we cannot write an in-domain one for an arbitrary task), long system prompts. The filters in
synth/filters.py drop what still goes wrong (label echoes, "Here is a text..." meta talk).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

PROMPT_VERSION = "synth-v3"
# Each template's own version, recorded with every row it produced. Bump one when its text changes
# (and PROMPT_VERSION with it). The v1 texts (labelled_text, instruction, answer) are unchanged
# when a task uses none of the v2 extras (seeds, constraints, language, label descriptions).
TEMPLATE_VERSIONS = {
    "labelled_text": 1,
    "labelled_list": 1,
    "instruction": 1,
    "answer": 1,
    "topics": 1,
    "subtopics": 1,
    "value_list": 1,
    "extraction_text": 1,
    "tool_request": 1,
    "judge": 1,
}

TEXT_MAX_TOKENS = 60  # one or two sentences; longer outputs from a weak teacher drift off-task
INSTRUCTION_MAX_TOKENS = 48
ANSWER_MAX_TOKENS = 160
TEMPERATURE = 0.8  # diversity without losing the thread; the answers use a lower one
ANSWER_TEMPERATURE = 0.3
LIST_MAX_TOKENS = 80  # topics, sub-topics and example values: ~8 short lines
LIST_TEMPERATURE = 0.9
JUDGE_MAX_TOKENS = 6  # a digit, maybe "Rating: 4"

WRITER_SYSTEM = (
    "You write short, realistic texts like the ones people really write. Reply with the text only."
)

# Diversity comes from the request, not from sampling alone: each request draws a subject and a
# writing style, so two requests for the same label rarely produce the same text.
SUBJECTS = [
    "a kitchen appliance", "a hotel stay", "a phone app", "a delivery", "a pair of shoes",
    "a monthly subscription", "a restaurant meal", "a laptop", "a bank account", "a train journey",
    "a gym membership", "a video game", "a pair of headphones", "an online course", "a coffee shop",
    "a car rental", "a book", "a furniture order", "a streaming service", "an internet connection",
    "a phone bill", "a skincare product", "a concert ticket", "a doctor's appointment", "a toy",
    "a camping tent", "a smart watch", "a pet food brand", "a software update", "a flight",
    "a moving company", "a printer", "a birthday cake", "a language app", "a bicycle", "a hair salon",
]  # fmt: skip
STYLES = [
    "in one sentence", "in two short sentences", "in a casual tone", "in a formal tone",
    "with one specific detail", "as a quick message", "in plain words", "with a number in it",
]  # fmt: skip


# A label with the customer's seeds is written as a list "like these" (labelled_list_messages).
LIST_SIZE = 5  # texts asked per list request; longer lists drift off the examples
LIST_EXAMPLES = 5  # seeds shown at most, so the prompt stays short for a small teacher
LIST_TOKENS_PER_TEXT = 32  # one sentence a line, with its marker


# Version 2 spreads difficulty too (Evol-Instruct's "in-depth" direction, as a sampled axis
# rather than a rewrite of each instruction: one request instead of two).
DIFFICULTIES = ["simple", "specific, detailed", "tricky, multi-part"]
# How a tool request is asked for; each was tried by hand on the 135M teacher (see tool_request).
REQUEST_FORMS = [
    "a question a person would ask a voice assistant",
    "a short request a person would type to an assistant",
]
LANGUAGES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "sv": "Swedish", "pl": "Polish", "ru": "Russian",
    "tr": "Turkish", "ar": "Arabic", "hi": "Hindi", "ja": "Japanese", "ko": "Korean", "zh": "Chinese",
}  # fmt: skip


@dataclass(frozen=True)
class Variation:
    subject: str
    style: str
    seed: int  # sent to the teacher, so a rerun with the same seed asks the same questions
    topic: str | None = None  # the teacher-planned topic the subject (a sub-topic) belongs to
    difficulty: str | None = None


def variations(
    rng: random.Random,
    n: int,
    subjects: list[tuple[str | None, str]] | None = None,
    spread_difficulty: bool = False,
) -> list[Variation]:
    """n seeded draws of (topic, subject), style and seed (and difficulty when asked); every
    subject is used once before any repeats. Without `subjects`, the built-in SUBJECTS."""
    pool = subjects or [(None, s) for s in SUBJECTS]
    drawn: list[tuple[str | None, str]] = []
    while len(drawn) < n:
        drawn += rng.sample(pool, len(pool))
    out = []
    for topic, subject in drawn[:n]:
        style, seed = rng.choice(STYLES), rng.randrange(2**31)
        difficulty = rng.choice(DIFFICULTIES) if spread_difficulty else None
        out.append(Variation(subject, style, seed, topic, difficulty))
    return out


def task_notes(language: str, constraints: list[str], label_description: str | None = None) -> str:
    """Sentences appended to a writing request: the label's meaning, the language, the
    constraints. Empty for a task that has none, so v1 prompts keep their exact text."""
    notes = []
    if label_description:
        notes.append(f"It means: {label_description.strip().rstrip('.')}.")
    if language != "en":
        notes.append(f"Write it in {LANGUAGES.get(language.split('-')[0], language)}.")
    notes += [c if c.endswith((".", "!", "?")) else c + "." for c in constraints]
    return "".join(" " + n for n in notes)


# One sentence added to the writing requests of the next round against the commonest drop
# reason of the last one (synth/generate.py steers with it). Only reasons a writing request can
# fix are here: answers are built by us, so json_invalid and the like cannot be asked away.
STEER_HINTS = {
    "value_not_in_text": "Use every value above word for word.",
    "scaffold_echo": "Write it as natural prose, not as a list of fields.",
    "label_leak": "Do not name its category.",
    "label_mismatch": "It must clearly fit the kind asked for, and nothing else.",
    "meta": "Reply with the text only, no introduction or comment.",
    "too_short": "Write at least one full sentence.",
    "too_long": "Keep it to two sentences.",
    "duplicate": "Make it unlike a typical example: pick an unusual detail.",
    "near_duplicate": "Make it unlike a typical example: pick an unusual detail.",
    "seed_copy": "Do not copy the example; write a new one.",
}


def classification_instruction(description: str, labels: list[str]) -> str:
    """The system turn of every classification row: what the fine-tuned model sees at inference."""
    return f"{description.strip()}\nAnswer with exactly one of: {', '.join(labels)}."


def labelled_text_messages(
    description: str, label: str, v: Variation, notes: str = "", example: str | None = None
) -> list[dict[str, str]]:
    """Ask for one input text that a person would label `label` under the task.

    "<task> Write a <label> one about <subject>, <style>." reads like a continuation of the task, so
    the small teacher writes an input rather than talking about the task. In a hand count on a
    sentiment and a support-routing task (24 requests each) it kept 18 of 24 outputs with the most
    plausible labels; framing it as "Task: ... Answer: <label> Write the input" kept 13.

    `example` (a customer's seed with this label) is shown as one to vary, not to copy: copies of
    a seed are dropped later as `seed_copy`.
    """
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {
            "role": "user",
            "content": f"{description.strip()} Write a {label} one about {v.subject}, {v.style}."
            + notes
            + _example(example),
        },
    ]


def labelled_list_messages(label: str, examples: list[str], n: int, notes: str = "") -> list[dict[str, str]]:
    """Ask for n more texts like the customer's seeds of one label, one per line.

    Shown a label's own seeds as a list, the 135M teacher continues the list on topic far more
    often than when asked for one text "about" a subject: on the four-team routing task (three seeds
    a team; counted by hand, 12 list requests against 20 single ones) 19 of the 29 listed texts
    fitted their team, against 4 of 20 labelled_text answers, whose sampled subject ("a shipping one
    about a hotel stay") often contradicts the label. Naming the task in the prompt or asking in the
    label's own words ("messages to the billing team") did no better; without seeds a list request
    gave mostly single words and hashtags, so labels without seeds keep labelled_text.
    """
    shown = "\n".join(f"- {e}" for e in examples)
    return [
        {
            "role": "user",
            "content": f"Examples of {label} texts:\n{shown}\n"
            f"Write {n} more {label} texts like these, one per line.{notes}",
        }
    ]


def instruction_messages(
    description: str, v: Variation, notes: str = "", examples: list[str] | None = None
) -> list[dict[str, str]]:
    """Ask for one request or question a user of the task would send.

    Self-instruct: with `examples` (customers' seeds, at most 2 per request so the prompt stays
    short for a small teacher) the teacher writes a new one in their manner. The difficulty of a
    version-2 variation spreads the requests from simple to multi-part.
    """
    shown = "".join(f"\n- {e}" for e in examples or [])
    shown = f"Examples of what users send:{shown}\n" if shown else ""
    kind = f"{v.difficulty} " if v.difficulty else ""
    new = "new " if examples else ""
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {
            "role": "user",
            "content": f"Task: {description.strip()}\n{shown}"
            f"Write one {new}{kind}question or request that a user could send for this task, about "
            f"{v.subject}.{notes} Reply with the question or request only.",
        },
    ]


def answer_messages(system: str, instruction: str) -> list[dict[str, str]]:
    """Answer an instruction in the task's role; `system` is also the exact system turn of the row."""
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": instruction}]


def topics_messages(description: str, n: int) -> list[dict[str, str]]:
    """Ask for n topics the task's users care about (NeMo Curator's macro topics).

    "Task: ...\nList n ..." is the framing the 135M teacher answers with a list most often; a
    longer request ("One per line, a few words each") made it talk about the task instead.
    """
    return [{"role": "user", "content": f"Task: {description.strip()}\nList {n} topics of this task."}]


def subtopics_messages(description: str, topic: str, n: int) -> list[dict[str, str]]:
    """Ask for n specific sub-topics of one topic; the sub-topics are the rows' subjects."""
    return [
        {
            "role": "user",
            "content": f'Task: {description.strip()}\nList {n} specific sub-topics of "{topic}".',
        }
    ]


def value_list_messages(description: str, thing: str, n: int) -> list[dict[str, str]]:
    """Ask for n realistic values of one free-text field (a tool argument, an extracted field);
    `thing` is the field's description, or "a <field name>"."""
    return [{"role": "user", "content": f"Task: {description.strip()}\nList {n} examples of {thing}."}]


def _example(example: str | None) -> str:
    """A customer's seed shown as one to vary, not to copy (copies are dropped as `seed_copy`)."""
    return f' For example: "{example}" Write a different one.' if example else ""


def extraction_text_messages(
    description: str, v: Variation, mentions: str, notes: str = "", example: str | None = None
) -> list[dict[str, str]]:
    """Ask for an input text that states the given facts; the JSON answer is those facts.

    The facts are sampled first, so the answer is correct by construction whenever the text
    really mentions them (checked afterwards: `value_not_in_text`). "Write a short text ... that
    mentions A, B and C" kept about a third of the 135M teacher's texts in a hand count.
    `example` (a customer's seed) shows what such texts look like; its values are not used.
    """
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {
            "role": "user",
            "content": f"{description.strip()} Write one short text a user would give for this task, "
            f"about {v.subject}, {v.style}. It must mention {mentions}.{notes}{_example(example)}",
        },
    ]


def tool_request_messages(
    action: str, mentions: str, v: Variation, notes: str = "", example: str | None = None
) -> list[dict[str, str]]:
    """Ask the teacher to phrase a tool call, already chosen, as the user's request.

    "Rewrite as a question a person would ask a voice assistant: get the weather forecast for a
    city (city: Boston, days: 3)." with no system turn was the best of seven framings on the 135M
    teacher (4 to 5 of 10 mention every argument); a writer system turn or "You are a user ..."
    made it answer as the assistant instead. `example` (a customer's request calling this tool, or
    any of their seeds) shows how their users ask.
    """
    form = REQUEST_FORMS[v.seed % len(REQUEST_FORMS)]
    details = f" ({mentions})" if mentions else ""
    return [{"role": "user", "content": f"Rewrite as {form}: {action}{details}.{notes}{_example(example)}"}]


def judge_messages(rubric: str, user: str, answer: str) -> list[dict[str, str]]:
    """Ask for a 1-5 score of one row against the customer's rubric (temperature 0)."""
    return [
        {"role": "system", "content": "You grade answers. Reply with a single digit from 1 to 5."},
        {
            "role": "user",
            "content": f"Rubric: {rubric.strip()}\n\nUser: {user}\nAssistant: {answer}\n\n"
            "Rate the assistant's answer against the rubric from 1 (bad) to 5 (excellent). "
            "Reply with one digit.",
        },
    ]


def extraction_instruction(description: str, schema: dict[str, Any]) -> str:
    """The system turn of every extraction row: the task and the schema the answer follows."""
    compact = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    return f"{description.strip()}\nReply with a JSON object that matches this JSON Schema: {compact}"


def chat_instruction(description: str, constraints: list[str]) -> str:
    """The system turn of a chat row (and of the answer request): the task and its rules."""
    rules = "".join(f"\n- {c}" for c in constraints)
    return description.strip() + (f"\nRules:{rules}" if rules else "")
