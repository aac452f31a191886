"""Training on several processes of one node: one per GPU, data parallel.

A full fine-tune that fits no single GPU of its class but fits N of them sharded (the plan's
memory model, recipes/estimate.py `peak_memory(shards=N)`) trains as N processes:

    launcher (the recipe CLI, or the worker's training process)
      └─ torch's elastic agent, in the launcher's own process (what `torchrun` and
         `accelerate launch` run underneath; accelerate's own launcher starts several CPU
         processes only through MPI, so the agent is called directly)
           ├─ rank 0: the recipe, as in one process; it alone reports, saves and writes the result
           └─ rank 1 .. N-1: the recipe, training only

Inside each rank the recipe is unchanged: TRL's trainer reads the rank from the environment and
accelerate (the trainer's backend) sets up the process group (NCCL on GPUs, gloo on CPUs) and:
- full fine-tuning on GPUs: FSDP2 full shard, one decoder layer per unit (the model's own
  `_no_split_modules`): each GPU holds 1/N of the weights, gradients and AdamW state;
- LoRA, and any run on CPUs: DDP (states replicated, gradients all-reduced). accelerate runs
  several CPU processes as DDP only (its MULTI_CPU mode ignores an FSDP plugin), so on a CPU the
  launch, the data split, the process group and rank 0's saving are what is exercised, the
  sharding itself only on GPUs.

Each process takes ceil(rows per step / N) of every step's rows (recipes/speed.py `rank_rows`),
so a run on N processes takes the same steps over the same rows as on one, and its loss curve is
the same within floating-point noise (tests/recipes/test_distributed.py checks it on 2 CPU
processes over gloo).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domain.lists import TrainingType

log = logging.getLogger(__name__)


def launched() -> bool:
    """This process is one rank of a launch (torch's elastic agent set its environment)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that reports, saves the outputs and writes results."""
    return int(os.environ.get("RANK", "0")) == 0


def shards_states(processes: int, method: TrainingType, cuda: bool) -> bool:
    """Whether several ranks shard the model (FSDP: full fine-tuning on GPUs) rather than each
    holding all of it (DDP: LoRA, and any run on CPUs, where accelerate does not shard)."""
    return processes > 1 and method == "full" and cuda


def shared_from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank; as it is a collective, every rank calls it at the same
    point of the run. The value itself as is in a single process."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(module: str, args: Sequence[str], processes: int) -> None:
    """Run `python -m module *args` as `processes` ranks on this node and wait for them all.

    The elastic agent runs here, in this process: the ranks are its children (each in a session of
    its own, torch's choice). A SIGTERM to this process makes the agent end them (its handler); a
    SIGKILL leaves them to die with their parent (the worker's ranks set PR_SET_PDEATHSIG,
    worker/stage_process.py). A rank that fails fails the launch (no restarts: a job resumes from
    its checkpoint through the worker, not here).

    Raises:
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError: a rank exited non-zero.
    """
    from torch.distributed.run import get_args_parser, run

    argv = ["--standalone", f"--nproc-per-node={processes}", "--max-restarts=0", "--module", module, *args]
    log.info("launching %s processes of %s", processes, module)
    run(get_args_parser().parse_args(argv))


def parallel_args(method: TrainingType, processes: int, checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments for `processes` ranks. Full fine-tuning: FSDP2 full shard, one decoder
    layer per unit (the model's `_no_split_modules`), resharded after each forward; FULL_STATE_DICT,
    so a checkpoint's model.safetensors is whole, as one process writes it, and resume reads it the
    same way; activation checkpointing by FSDP itself (the trainer's own would all-gather each
    layer once more in the backward pass). LoRA: DDP."""
    if processes <= 1:
        return {}
    if method == "full":
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "reshard_after_forward": True,
                "state_dict_type": "FULL_STATE_DICT",
                "activation_checkpointing": checkpointing,
            },
            "activation_checkpointing": False,
            # accelerate runs several CPU processes as DDP whatever is asked (FSDP is for
            # accelerators), so the same launch on CPUs is data parallel with replicated states
            "ddp_find_unused_parameters": False,
        }
    return {"ddp_find_unused_parameters": False}  # every trained weight gets a gradient every step


def full_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The trained model's whole state dict on rank 0 (None on the others), gathered from the
    shards; every rank must call this, as the gather is collective."""
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return state if is_main_process() else None


def unwrapped_copy(base_model_dir: Path, state: dict[str, Any]) -> Any:
    """A plain (unsharded) model of the base's architecture holding `state`, to save as one
    process saves its model."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if set(missing) - tied or unexpected:
        raise ValueError(f"gathered weights do not fit the base: missing {missing}, unexpected {unexpected}")
    return model
