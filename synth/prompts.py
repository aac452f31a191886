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

import random
from dataclasses import dataclass

PROMPT_VERSION = "synth-v1"

TEXT_MAX_TOKENS = 60  # one or two sentences; longer outputs from a weak teacher drift off-task
INSTRUCTION_MAX_TOKENS = 48
ANSWER_MAX_TOKENS = 160
TEMPERATURE = 0.8  # diversity without losing the thread; the answers use a lower one
ANSWER_TEMPERATURE = 0.3

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


@dataclass(frozen=True)
class Variation:
    subject: str
    style: str
    seed: int  # sent to the teacher, so a rerun with the same seed asks the same questions


def variations(rng: random.Random, n: int) -> list[Variation]:
    """n seeded (subject, style, seed) draws; every subject is used once before any repeats."""
    subjects: list[str] = []
    while len(subjects) < n:
        subjects += rng.sample(SUBJECTS, len(SUBJECTS))
    return [Variation(subjects[i], rng.choice(STYLES), rng.randrange(2**31)) for i in range(n)]


def classification_instruction(description: str, labels: list[str]) -> str:
    """The system turn of every classification row: what the fine-tuned model sees at inference."""
    return f"{description.strip()}\nAnswer with exactly one of: {', '.join(labels)}."


def labelled_text_messages(description: str, label: str, v: Variation) -> list[dict[str, str]]:
    """Ask for one input text that a person would label `label` under the task.

    "<task> Write a <label> one about <subject>, <style>." reads like a continuation of the task, so
    the small teacher writes an input rather than talking about the task. In a hand count on a
    sentiment and a support-routing task (24 requests each) it kept 18 of 24 outputs with the most
    plausible labels; framing it as "Task: ... Answer: <label> Write the input" kept 13.
    """
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {
            "role": "user",
            "content": f"{description.strip()} Write a {label} one about {v.subject}, {v.style}.",
        },
    ]


def instruction_messages(description: str, v: Variation) -> list[dict[str, str]]:
    """Ask for one request or question a user of the task would send."""
    return [
        {"role": "system", "content": WRITER_SYSTEM},
        {
            "role": "user",
            "content": f"Task: {description.strip()}\n"
            f"Write one question or request that a user could send for this task, about {v.subject}. "
            "Reply with the question or request only.",
        },
    ]


def answer_messages(description: str, instruction: str) -> list[dict[str, str]]:
    """Answer an instruction in the task's role; also the exact system turn of the training row."""
    return [{"role": "system", "content": description.strip()}, {"role": "user", "content": instruction}]
