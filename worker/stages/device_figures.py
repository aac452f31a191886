"""Device figures for a job's gate (issue 18 item 2): when an agent of a target's profile is online,
the exported GGUF is measured there before the gate, and its memory and speed budgets are checked
against those figures, labelled with the device. Without one, or when none answers within
settings.device_measure_wait_s, the host figures stand, labelled with the host as before, and the
job's events say which it was. Either way the device model (export/device_model.py) predicts the
device's figures, with its error against the measurement when there is one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infra.db import session_scope
from infra.settings import get_settings
from services import device_benchmarks
from services.schemas.device_agents import BenchmarkSettings
from worker.context import JobContext
from worker.stages.common import stop_check

# The measurement: as llama-bench's defaults are pp512/tg128, scaled down so a slow device answers
# in seconds; speed per token hardly depends on the count past a few dozen.
PROMPT_TOKENS, DECODE_TOKENS = 128, 64
POLL_S = 1.0


def on_device(
    ctx: JobContext, profile: Any, gguf: Path, host_stats: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the agent's figures or None, the device model's prediction or None) for one GGUF. The
    model is fitted on the measurements made before this one, so its error here is a fair test."""
    from export.device_model import calibrate, compare, predict
    from export.profiles import gguf_parameters

    with session_scope() as session:
        points = device_benchmarks.calibration_points(session, ctx.org_id, profile.name)
        calibration = calibrate(profile, points)
    measured = device_figures(ctx, profile, gguf)
    host_mb = (host_stats or {}).get("peak_rss_growth_mb")
    predicted = predict(profile, gguf.stat().st_size, host_mb, calibration, gguf_parameters(gguf))
    if predicted is not None and measured is not None:
        predicted = compare(
            predicted, float(measured["decode_tokens_per_s"]), measured.get("prefill_tokens_per_s")
        )
    return measured, predicted


def device_figures(ctx: JobContext, profile: Any, gguf: Path) -> dict[str, Any] | None:
    """The agent's result for `gguf` (with `measured_at`), or None when the host's must do."""
    from export.profiles import eval_context

    context = eval_context(profile, gguf)
    settings = BenchmarkSettings(
        context=context, prompt_tokens=min(PROMPT_TOKENS, context // 2), decode_tokens=DECODE_TOKENS
    )
    with session_scope() as session:
        online = device_benchmarks.agents_online(session, ctx.org_id, profile.name)
        if not online:
            return None
        task = device_benchmarks.queue_candidate(
            session, org_id=ctx.org_id, job_id=ctx.job_id, target=profile.name, path=gguf, settings=settings
        )
        task_id = task.id
    ctx.event(
        f"Measuring {profile.name} on the device: {len(online)} agent(s) of the profile online",
        data={"target": profile.name, "device_benchmark": task_id},
    )
    return _wait(ctx, profile.name, task_id)


def _wait(ctx: JobContext, target: str, task_id: str) -> dict[str, Any] | None:
    """The agent's figures once it posts them; None when it failed or none answered in time. A
    cancel, or the budget reached counting the wait at the stage's rate, ends the job meanwhile."""
    deadline = time.monotonic() + get_settings().device_measure_wait_s
    stop = stop_check(ctx, "export")
    try:
        while True:
            if (stopped := stop()) is not None:
                raise stopped
            with session_scope() as session:
                task = device_benchmarks.poll(session, ctx.org_id, task_id)
                status, result, error = task.status, task.result, task.error
            if status == "succeeded" and result is not None:
                return result | {"measured_at": device_benchmarks.measured_at(result)}
            if status == "failed" or time.monotonic() > deadline:
                why = (error or {}).get("message") or "no agent answered in time"
                ctx.event(
                    f"No device figures for {target} ({why}): its budgets use the host's",
                    level="warn",
                    data={"target": target, "device_benchmark": task_id},
                )
                return None
            time.sleep(POLL_S)
    finally:
        with session_scope() as session:
            device_benchmarks.abandon(session, ctx.org_id, task_id, "the job stopped waiting for it")
