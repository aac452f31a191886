"""The stages of a job, one module each, run in the order domain/lists.py gives. Each takes the
job context and returns its outputs (merged into `jobs.state`); the heavy lifting lives in recipes/,
synth/, eval/ and export/."""

from __future__ import annotations

from domain.lists import STAGES as STAGE_NAMES
from domain.lists import StageName
from worker.context import Stage
from worker.stages.evaluate import evaluate
from worker.stages.export import export
from worker.stages.gate import gate
from worker.stages.prepare import prepare
from worker.stages.publish import publish
from worker.stages.synthesize import synthesize
from worker.stages.train import train

_RUN: dict[StageName, Stage] = {
    "prepare": prepare,
    "synthesize": synthesize,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "gate": gate,
    "publish": publish,
}
STAGES: list[tuple[StageName, Stage]] = [(name, _RUN[name]) for name in STAGE_NAMES]
