"""Training in a process of its own: the train stage starts `python -m worker.train_process`, which
runs one recipe and writes its result to a file, while the stage waits and watches the job.

Why a fresh interpreter and not the worker process (or a multiprocessing child):
- CUDA never lives in the Celery process. The child is the only process that initialises CUDA for
  training, so every byte of GPU memory it took (weights, optimizer state, the caching allocator's
  pool) goes back to the driver when it exits: the next job starts on an empty GPU by
  construction, with no `empty_cache()` bookkeeping.
- A cancel or a budget stop ends training at once: the stage polls the job about once a second and
  terminates the child's process group, instead of waiting for the trainer's next step boundary.
- A crash (out of memory, a kernel fault) takes down only the child; the stage fails with the end
  of the child's log, kept in the job's work dir.
- A spawned interpreter, not multiprocessing: Celery's prefork pool processes are daemonic and may
  not have multiprocessing children, and a fork would copy the worker's threads and DB pool.

The child rebuilds the job's context from the database (settings reach it through the EDGETUNE_*
environment it inherits), so JobTrainerCallback writes progress events and checkpoint rows as it
did in the worker. Resuming is unchanged: recipes continue from output_dir/checkpoints.

If the worker dies (SIGKILL, a lost machine), the child dies with it (PR_SET_PDEATHSIG on Linux,
and a watchdog thread on the parent pid everywhere), so a job taken over by another worker never
has two trainers writing to one checkpoint directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.errors import EdgetuneError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from recipes.dpo import DPOResult
    from recipes.training_common import TrainResult
    from worker.pipeline import JobContext

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 1.0  # how often the stage checks the child, the cancel flag and the budget
GRACE_S = 5.0  # SIGTERM first, SIGKILL if the child has not gone after this long
LOG_TAIL_CHARS = 3000  # how much of the child's log a failed stage quotes


class TrainingFailed(EdgetuneError):
    """The training process died (killed, e.g. out of memory, or crashed): the job fails with
    code `training_failed` and the end of the process's log, as ExportFailed does for a runtime."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param=None, code="training_failed")


# ---- which recipe -------------------------------------------------------------------------------


def recipe_name(cfg: BaseModel) -> str:
    """The recipe module a config belongs to: its config class says it (they are distinct)."""
    from recipes.dpo import DPORecipeConfig
    from recipes.full_sft import FullSFTConfig
    from recipes.lora_sft import LoraSFTConfig

    for name, cls in (("lora_sft", LoraSFTConfig), ("full_sft", FullSFTConfig), ("dpo", DPORecipeConfig)):
        if isinstance(cfg, cls):
            return name
    raise TypeError(f"no recipe takes a {type(cfg).__name__}")


def _recipe(name: str) -> tuple[Callable[..., Any], type[BaseModel]]:
    from recipes import dpo, full_sft, lora_sft

    recipes: dict[str, tuple[Callable[..., Any], type[BaseModel]]] = {
        "lora_sft": (lora_sft.train, lora_sft.LoraSFTConfig),
        "full_sft": (full_sft.train, full_sft.FullSFTConfig),
        "dpo": (dpo.train, dpo.DPORecipeConfig),
    }
    return recipes[name]


def parse_result(name: str, text: str) -> TrainResult | DPOResult:
    from recipes.dpo import DPOResult
    from recipes.training_common import TrainResult

    return DPOResult.model_validate_json(text) if name == "dpo" else TrainResult.model_validate_json(text)


# ---- the parent (the train stage) ---------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The worker's environment (EDGETUNE_* settings included), with the project importable even
    when it is run from a checkout rather than installed, and no progress bars in the log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")  # the trainer's bar would fill the log the error quotes
    env["PYTHONUNBUFFERED"] = "1"  # the log is complete up to the moment the child dies
    return env


def _end_child(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
    """SIGTERM the child's process group (its own children too), SIGKILL it after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _log_tail(log: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(log.stat().st_size - chars, 0))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


def _exit_reason(rc: int) -> str:
    if rc == -signal.SIGKILL:
        return "was killed by SIGKILL (e.g. out of memory)"
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _wait(
    proc: subprocess.Popen[bytes], should_stop: Callable[[], BaseException | None], poll_s: float
) -> int:
    """The child's exit code; raises what `should_stop` returns, after ending the child. Any other
    way out of here (the worker shutting down, a database error in the check) ends it too."""
    try:
        while True:
            try:
                return proc.wait(timeout=poll_s)
            except subprocess.TimeoutExpired:
                pass
            if (stop := should_stop()) is not None:
                raise stop
    except BaseException:
        _end_child(proc)
        raise


def run_recipe_in_child(
    ctx: JobContext,
    cfg: BaseModel,
    should_stop: Callable[[], BaseException | None],
    *,
    poll_s: float = POLL_S,
) -> TrainResult | DPOResult:
    """Run the recipe for `cfg` in a child process and return its result.

    `should_stop` is called about every `poll_s` seconds; an exception it returns (JobCancelled,
    BudgetExhausted) is raised here once the child is gone.

    Raises:
        TrainingFailed: the child exited non-zero or was killed; the message quotes its log's end.
    """
    name = recipe_name(cfg)
    run_dir = ctx.work_dir / "train-process"
    run_dir.mkdir(parents=True, exist_ok=True)
    spec, result, log = run_dir / "spec.json", run_dir / "result.json", run_dir / "train.log"
    spec.write_text(json.dumps({"recipe": name, "config": cfg.model_dump(mode="json")}, indent=1))
    result.unlink(missing_ok=True)  # a result left by an earlier attempt must not be read as this one's
    args = ["--job-id", ctx.job_id, "--work-dir", str(ctx.work_dir), "--spec", str(spec)]
    args += ["--result", str(result), "--parent-pid", str(os.getpid())]
    with log.open("ab") as fh:
        fh.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {name} for {ctx.job_id}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.train_process", *args],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,  # its own process group: one killpg ends it and its children
        )
    try:
        ctx.event(f"Training in process {proc.pid} ({name})", data={"train_pid": proc.pid, "log": str(log)})
    except BaseException:  # nobody would wait for it
        _end_child(proc)
        raise
    rc = _wait(proc, should_stop, poll_s)
    if rc != 0 or not result.exists():
        reason = _exit_reason(rc) if rc != 0 else "exited without writing its result"
        raise TrainingFailed(f"the training process {reason}; the end of its log ({log}):\n{_log_tail(log)}")
    return parse_result(name, result.read_text())


# ---- the child ----------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """End this process as soon as the worker that started it is gone: the kernel's parent-death
    signal on Linux, and a thread watching the parent pid (other systems, and the moment between
    our start and the prctl call)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        # our own process group (the stage starts us as its leader), else only ourselves
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def load_context(job_id: str, work_dir: Path) -> JobContext:
    """The job's context as the worker built it, from its row."""
    from infra.db import session_scope
    from infra.job_config import JobConfig
    from infra.models import Job
    from worker.pipeline import JobContext

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise SystemExit(f"job {job_id} does not exist")
        return JobContext(
            job.id, job.org_id, JobConfig.model_validate(job.config), work_dir, dict(job.state or {})
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one job's recipe (the train stage starts this).")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True, help="JSON: {recipe, config}")
    parser.add_argument("--result", type=Path, required=True, help="where the result JSON goes")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)

    from worker.callbacks import JobTrainerCallback

    spec = json.loads(args.spec.read_text())
    run, config_cls = _recipe(spec["recipe"])
    cfg = config_cls.model_validate(spec["config"])
    ctx = load_context(args.job_id, args.work_dir)
    # The parent watches cancel and budget and ends this process; the callback only reports.
    out = run(cfg, callbacks=[JobTrainerCallback(ctx, watch_stop=False)])
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(out.model_dump_json())
    tmp.replace(args.result)  # whole or absent: the parent never reads half a result
    return 0


if __name__ == "__main__":
    sys.exit(main())
