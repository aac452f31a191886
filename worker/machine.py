"""What the machine a worker runs on has: asked once per job run, as a job handed between pools
(worker/handoff.py) or taken over after a lost machine may train on one and export on another."""

from __future__ import annotations

import os
from typing import Literal


def gpu_present() -> bool:
    """Whether this machine has a usable GPU, asked of NVML: the CUDA runtime's own check would
    initialise CUDA in this (Celery) process, and only the training process should
    (worker/train_process.py). The setting is put back so that process makes the full check."""
    import torch

    name = "PYTORCH_NVML_BASED_CUDA_CHECK"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        return torch.cuda.is_available()
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def device() -> Literal["cuda", "cpu"]:
    return "cuda" if gpu_present() else "cpu"
