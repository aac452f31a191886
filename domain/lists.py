"""Every fixed list of edgetune, each written once: the pipeline's stages and which of them bill at
the GPU rate, the training methods and types and the recipe each pair runs, the task types a
customer asks for and the scorer each is judged by.

A new entry starts here; docs/architecture.md lists, for each kind, the one module to add beside it.
"""

from __future__ import annotations

from typing import Literal, get_args

# ---- the job's pipeline (worker/pipeline.py runs worker/stages/<name>.py in this order) -------------
StageName = Literal["prepare", "synthesize", "train", "evaluate", "export", "gate", "publish"]
STAGES: tuple[StageName, ...] = get_args(StageName)
# Stages that run on the worker's accelerator when it has one: billed at its GPU class then (the
# price book's rule), the others always at the CPU rate.
GPU_STAGES: tuple[StageName, ...] = ("train", "evaluate", "export")
# Stages whose outputs are files in the work dir (data, merged weights, exported artifacts): a
# worker taking a job over on another machine runs them again. The others leave everything they
# made in the database or the artifact store.
LOCAL_OUTPUT_STAGES: tuple[StageName, ...] = ("prepare", "synthesize", "train", "export")

# ---- how a job trains -------------------------------------------------------------------------------
MethodType = Literal["supervised", "dpo"]
METHOD_TYPES: tuple[MethodType, ...] = get_args(MethodType)
TrainingType = Literal["lora", "full"]
TRAINING_TYPES: tuple[TrainingType, ...] = get_args(TrainingType)
RecipeName = Literal["lora_sft", "full_sft", "dpo"]
RECIPES: tuple[RecipeName, ...] = get_args(RecipeName)


def recipe_for(method: MethodType, training_type: TrainingType) -> RecipeName:
    """The recipe (recipes/<name>.py) a method and training type run. DPO trains a LoRA adapter or
    all weights in one recipe; supervised has one recipe per training type."""
    if method == "dpo":
        return "dpo"
    return "lora_sft" if training_type == "lora" else "full_sft"


# ---- what a device gets ----------------------------------------------------------------------------
# Artifact formats a device profile may name (export/profiles.yaml); export/targets.py makes each.
ArtifactFormat = Literal["gguf", "onnx", "safetensors"]
ARTIFACT_FORMATS: tuple[ArtifactFormat, ...] = get_args(ArtifactFormat)

# ---- what the model is for ------------------------------------------------------------------------
# What a customer's task asks the model to answer with (a job's `task.type`).
TaskKind = Literal["classification", "extraction", "tool_calling", "chat"]
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)
# How an answer is scored (eval/metrics.py): a chat answer is judged as free generation.
EvalTaskType = Literal["classification", "extraction", "tool_calling", "generation"]
EVAL_TASK_TYPES: tuple[EvalTaskType, ...] = get_args(EvalTaskType)
EVAL_TASK_TYPE: dict[TaskKind, EvalTaskType] = {
    "classification": "classification",
    "extraction": "extraction",
    "tool_calling": "tool_calling",
    "chat": "generation",
}
# The task types scored on one right answer (eval/runners.py decodes every eval greedily): their
# model card recommends greedy decoding on the device too (export/manifest.py), as sampling can only
# move the output away from what the eval gate scored.
GREEDY_TASKS: tuple[EvalTaskType, ...] = ("classification", "extraction", "tool_calling")
