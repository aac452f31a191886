"""How the teacher is asked for each task type's rows: one module per type, one line each here
(the type's domain facts are its row in domain/lists.py TASKS)."""

from __future__ import annotations

from domain.lists import TaskKind
from synth.tasks import chat, classification, extraction, tool_calling
from synth.tasks.spec import SynthTask

SYNTH_TASKS: dict[TaskKind, SynthTask] = {
    "classification": classification.TASK,
    "extraction": extraction.TASK,
    "tool_calling": tool_calling.TASK,
    "chat": chat.TASK,
}
