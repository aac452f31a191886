"""The evaluate stage's process on a GPU worker: `python -m worker.eval_process` loads the base and
the fine-tuned model (bf16, on the GPU), answers the held-out rows and the probe in batches, and
writes the four results; the stage waits and watches the job as the train stage does
(worker/stage_process.py: CUDA stays out of the Celery process, the GPU memory goes back when this
process exits, a cancel or budget stop ends it at once, a crash fails the job with its log).

The spec carries everything the scoring needs (rows, task type, labels, the probe's items, the
two model dirs, the device, the training rows the prompted base takes its examples from), so the
process needs no database: it computes what `eval.scoring.score_models` computes in the worker,
and on the CPU gives the same scores.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.errors import EdgetuneError
from worker.stage_process import POLL_S, ChildKind, child_main, run_in_child

if TYPE_CHECKING:
    from eval.metrics import EvalResult
    from eval.probe import ProbeItem
    from eval.runners import Device
    from eval.scoring import HeldOut
    from worker.context import JobContext


class EvaluationFailed(EdgetuneError):
    """The evaluation process died (killed, e.g. out of memory, or crashed): the job fails with
    code `evaluation_failed` and the end of the process's log."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param=None, code="evaluation_failed")


EVAL_PROCESS = ChildKind(
    module="worker.eval_process",
    dir_name="eval-process",
    log_name="eval.log",
    what="the evaluation process",
    started="Evaluating in process {pid} ({label})",
    pid_key="eval_pid",
    error=EvaluationFailed,
)


def score_models_in_child(
    ctx: JobContext,
    base_dir: Path,
    tuned_dir: Path,
    held_out: HeldOut,
    probe: Sequence[ProbeItem],
    device: Device,
    should_stop: Callable[[], BaseException | None],
    shots: list[dict[str, Any]] | None = None,
    *,
    poll_s: float = POLL_S,
) -> dict[str, EvalResult]:
    """`eval.scoring.score_models` in a process of its own; the same results (four, and
    "base_prompted" when `shots`, the training rows, are given).

    Raises:
        EvaluationFailed: the process exited non-zero or was killed; the message quotes its log.
    """
    from eval.metrics import EvalResult

    rows, task_type, labels = held_out
    spec = {
        "base_dir": str(base_dir),
        "tuned_dir": str(tuned_dir),
        "rows": rows,
        "task_type": task_type,
        "labels": labels,
        "probe": [asdict(item) for item in probe],
        "device": device,
        "shots": shots,
    }
    text = run_in_child(
        ctx, EVAL_PROCESS, spec, should_stop, label=f"{len(rows)} rows on {device}", poll_s=poll_s
    )
    return {name: EvalResult.from_dict(data) for name, data in json.loads(text).items()}


def score(spec: dict[str, Any], _job_id: str, _work_dir: Path) -> str:
    """The child's work: the results as JSON (`EvalResult.to_dict` each)."""
    from eval.probe import ProbeItem
    from eval.scoring import score_models

    held_out = (spec["rows"], spec["task_type"], spec["labels"])
    probe = [ProbeItem(**{**item, "answers": tuple(item["answers"])}) for item in spec["probe"]]
    base, tuned = Path(spec["base_dir"]), Path(spec["tuned_dir"])
    scored = score_models(base, tuned, held_out, probe, device=spec["device"], shots=spec.get("shots"))
    return json.dumps({name: r.to_dict() for name, r in scored.items()})


def main(argv: list[str] | None = None) -> int:
    return child_main(
        score, "Score a job's base and fine-tuned models (the evaluate stage starts this).", argv
    )


if __name__ == "__main__":
    sys.exit(main())
