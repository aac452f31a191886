"""Every fixed list of edgetune, each written once: the pipeline's stages and which of them bill at
the GPU rate, the training methods and types and the recipe each pair runs, the task types a
customer asks for and the scorer each is judged by.

A new entry starts here; docs/architecture.md lists, for each kind, the one module to add beside it.
The artifact formats a device gets are listed with their modules, in export/formats/__init__.py.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

# ---- the job's pipeline (worker/pipeline.py runs worker/stages/<name>.py in this order) -------------
StageName = Literal["prepare", "synthesize", "train", "evaluate", "export", "gate", "publish"]
STAGES: tuple[StageName, ...] = get_args(StageName)
# Stages that run on the worker's accelerator when it has one: billed at its GPU class then (the
# price book's rule), the others always at the CPU rate.
GPU_STAGES: tuple[StageName, ...] = ("train", "evaluate", "export")
# How many GPUs of one node a job that fits no single GPU may be given (recipes/distributed.py);
# a job on N GPUs holds them for all its GPU stages and is billed N x its class's rate for them.
GPUS_PER_JOB: tuple[int, ...] = (2, 4, 8)
# Stages that need the job's accelerator. With compute pools (services/pools.py queue_for_stage) a GPU
# job's other stages run on a CPU worker, so its GPU is not held while they run: synthesis waits on
# the teacher (the bundled one is llama.cpp on the CPU, a hosted one answers over HTTP), export is
# llama.cpp's converter and quantizer and the ONNX exporter on the CPU, the artifact eval runs each
# file in its device runtime (llama.cpp, onnxruntime: CPU builds), the gate reads numbers and publish
# copies files. A job that synthesizes nothing runs the stages before training beside it (prepare
# takes seconds, synthesize then does nothing): a hop to another queue would cost a wait for nothing.
ACCELERATOR_STAGES: tuple[StageName, ...] = ("train", "evaluate")
# Stages whose outputs are files in the work dir (data, merged weights, exported artifacts): a
# worker taking a job over on another machine runs them again. The others leave everything they
# made in the database or the artifact store.
LOCAL_OUTPUT_STAGES: tuple[StageName, ...] = ("prepare", "synthesize", "train", "export")

# ---- a run's life: jobs and synthetic datasets share it (worker/lifecycle.py, services/run_lifecycle.py)
# The statuses a run never leaves: a cancel is refused, the worker stops, streams end.
TERMINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled")

# ---- how a job trains -------------------------------------------------------------------------------
MethodType = Literal["supervised", "dpo"]
METHOD_TYPES: tuple[MethodType, ...] = get_args(MethodType)
TrainingType = Literal["lora", "full"]
TRAINING_TYPES: tuple[TrainingType, ...] = get_args(TrainingType)
RecipeName = Literal["lora_sft", "full_sft", "dpo"]
RECIPES: tuple[RecipeName, ...] = get_args(RecipeName)
# The kinds of rows a training file holds (services/files.py tells them apart on upload).
RowFormat = Literal["chat", "preference"]


class MethodFacts(NamedTuple):
    """What the rest of edgetune needs to know about one training method, in one row."""

    rows: RowFormat  # what its training and validation files hold
    # Sequences the model reads per row (a preference pair: the chosen and the rejected answer):
    # the plan's tokens, time and memory scale with it.
    sequences_per_row: int
    # Trained against a frozen reference model (DPO): one more forward pass per sequence (the
    # plan's FLOPs), a second copy of the weights when all of them train (LoRA's reference is the
    # base with the adapter off), and a loss computed from the logits, so no fused cross-entropy.
    reference_model: bool
    # Synthesis from a task makes its rows (chat rows); a method that trains on another kind needs
    # a training_file.
    synthesized: bool
    # Mixes the base's own answers in against forgetting (recipes/replay.py adds chat rows).
    replay: bool


METHODS: dict[MethodType, MethodFacts] = {
    "supervised": MethodFacts("chat", 1, reference_model=False, synthesized=True, replay=True),
    "dpo": MethodFacts("preference", 2, reference_model=True, synthesized=False, replay=False),
}


def recipe_for(method: MethodType, training_type: TrainingType) -> RecipeName:
    """The recipe (recipes/<name>.py) a method and training type run. DPO trains a LoRA adapter or
    all weights in one recipe; supervised has one recipe per training type."""
    if method == "dpo":
        return "dpo"
    return "lora_sft" if training_type == "lora" else "full_sft"


# A device's budgets: each profile's limits (export/profiles.yaml), which a job's target may replace
# with its own (domain/job_config.py TargetBudgets); export/device_budgets.py measures each, the gate
# (eval/gate.py) and the sweep's pick (export/selection.py) judge them. A `max_` budget is a
# ceiling, a `min_` one a floor.
BudgetName = Literal["max_artifact_mb", "max_ram_mb", "min_decode_tokens_per_s", "min_prefill_tokens_per_s"]
BUDGETS: tuple[BudgetName, ...] = get_args(BudgetName)
BUDGET_UNITS: dict[BudgetName, str] = {
    "max_artifact_mb": "MB",
    "max_ram_mb": "MB",
    "min_decode_tokens_per_s": "tokens/s",
    "min_prefill_tokens_per_s": "tokens/s",
}

# How a job's target picks its artifact: the profile's default quantization, or the best-scoring of
# a sweep that meets every budget on the device (worker/stages/sweep.py).
TargetSelect = Literal["default", "best_within_budget"]
# The sweep's GGUF quantizations, largest first: from Q8_0 down to the smallest llama.cpp runs on
# every device class (F16 is never a device artifact).
SWEEP_FORMAT = "gguf"
SWEEP_QUANTIZATIONS: tuple[str, ...] = ("Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0")


def sweep_size(select: TargetSelect) -> int:
    """Artifacts a target exports and scores: one, or the whole sweep."""
    return len(SWEEP_QUANTIZATIONS) if select == "best_within_budget" else 1


# ---- the teacher (synth/teacher.py) -----------------------------------------------------------------
# How a teacher is asked for an answer of a JSON Schema is infra/settings.py StructuredOutput: an
# operator's setting is typed by it, and infra does not import the domain.


# ---- what the model is for ------------------------------------------------------------------------
# How an answer is scored and constrained: its form (eval/metrics.py scores each, eval/grammar.py
# constrains each, domain/answers.py says which answers are valid). A chat reply is free generation.
EvalTaskType = Literal["classification", "extraction", "tool_calling", "generation"]
EVAL_TASK_TYPES: tuple[EvalTaskType, ...] = get_args(EvalTaskType)
# What a customer's task asks the model to answer with (a job's `task.type`): each has one module
# in synth/tasks/ (how the teacher is asked for its rows) and one row in TASKS below.
TaskKind = Literal["classification", "extraction", "tool_calling", "chat"]
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)
# The TaskSpec fields that describe a task's answers; a field belongs to the kinds that name it.
AnswerField = Literal["labels", "output_schema", "tools"]


class TaskFacts(NamedTuple):
    """What the domain needs to know about one task type, in one row."""

    answers: EvalTaskType  # the answer's form: how it is validated, scored and constrained
    # The TaskSpec field a task of this type must give (and the only one of them it may give); a
    # body without `type` gets the first type, in this order, whose field it has.
    field: AnswerField | None
    # Whether the teacher can answer a synthesized row again to check it (the round trip): a label
    # or a JSON object can be compared field by field; a tool call's phrasing or a reply cannot.
    round_trip: bool


TASKS: dict[TaskKind, TaskFacts] = {
    "classification": TaskFacts("classification", "labels", round_trip=True),
    "extraction": TaskFacts("extraction", "output_schema", round_trip=True),
    "tool_calling": TaskFacts("tool_calling", "tools", round_trip=False),
    "chat": TaskFacts("generation", None, round_trip=False),
}


class EvalTaskFacts(NamedTuple):
    """What every part of edgetune needs to know about one eval task type, in one row."""

    metric: str  # the headline metric its scorer reports (eval/metrics.py)
    # Answer budget of every eval decode (eval/runners.py). A label fits in 16 tokens; a tool-call
    # list with a few string arguments, or a JSON object with a handful of fields, runs to tens or
    # hundreds, and an answer cut short fails to parse and scores 0. Generation keeps its old 16 so
    # existing jobs cost what they did: longer answers are cut there too, which lowers every
    # model's generation score alike.
    max_new_tokens: int
    # What the artifact's grammar (eval/grammar.py) constrains, as the manifest records it; None
    # for free text, which ships no grammar.
    constrains: str | None
    # Scored on one right answer (eval/runners.py decodes every eval greedily): the model card
    # recommends greedy decoding on the device too (export/manifest.py), as sampling can only move
    # the output away from what the eval gate scored.
    greedy: bool


EVAL_TASKS: dict[EvalTaskType, EvalTaskFacts] = {
    "classification": EvalTaskFacts("accuracy", 16, "labels", greedy=True),
    "extraction": EvalTaskFacts("field_f1", 256, "json_schema", greedy=True),
    "tool_calling": EvalTaskFacts("exact_match", 128, "tool_calls", greedy=True),
    "generation": EvalTaskFacts("token_f1", 16, None, greedy=False),
}
GREEDY_TASKS: tuple[EvalTaskType, ...] = tuple(t for t, f in EVAL_TASKS.items() if f.greedy)
