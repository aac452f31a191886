"""A stage's heavy work in a process of its own: the stage starts `python -m <module>` (a module
whose `__main__` calls `child_main` with the function to run), hands it a JSON spec file, and
waits for a result file while it watches the job. Training (worker/train_process.py) and, on a
GPU worker, evaluation (worker/eval_process.py) run this way.

Why a fresh interpreter and not the worker process (or a multiprocessing child):
- CUDA never lives in the Celery process. The child is the only process that initialises CUDA,
  so every byte of GPU memory it took (weights, optimizer state, the caching allocator's pool)
  goes back to the driver when it exits: the next job starts on an empty GPU by construction,
  with no `empty_cache()` bookkeeping.
- A cancel or a budget stop ends the work at once: the stage polls the job about once a second
  and terminates the child's process group, instead of waiting for the next step boundary.
- A crash (out of memory, a kernel fault) takes down only the child; the stage fails with the end
  of the child's log, kept in the job's work dir.
- A spawned interpreter, not multiprocessing: Celery's prefork pool processes are daemonic and may
  not have multiprocessing children, and a fork would copy the worker's threads and DB pool.

Settings reach the child through the EDGETUNE_* environment it inherits, so a child that needs
the job's context can rebuild it from the database (`load_context`).

If the worker dies (SIGKILL, a lost machine), the child dies with it (PR_SET_PDEATHSIG on Linux,
and a watchdog thread on the parent pid everywhere), so a job taken over by another worker never
has two processes writing to one work directory.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.errors import EdgetuneError

if TYPE_CHECKING:
    from worker.context import JobContext

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 1.0  # how often the stage checks the child, the cancel flag and the budget
GRACE_S = 5.0  # SIGTERM first, SIGKILL if the child has not gone after this long
LOG_TAIL_CHARS = 3000  # how much of the child's log a failed stage quotes

# What runs in the child: (spec, job id, work dir) -> the result as JSON text.
ChildFunction = Callable[[dict[str, Any], str, Path], str]


@dataclass(frozen=True)
class ChildKind:
    """One kind of stage process: how it is started, where its files go, and how it fails.

    Attributes:
        module: run as `python -m <module>`; its `__main__` calls `child_main`.
        dir_name: the folder under the job's work dir holding spec.json, result.json and the log.
        log_name: the log's file name in that folder (stdout and stderr, appended per attempt).
        what: how messages name the process ("the training process").
        started: the event logged with the child's pid: a format string with {pid} and {label}.
        pid_key: the event data key holding the pid.
        error: builds the error the stage raises when the child dies or fails.
    """

    module: str
    dir_name: str
    log_name: str
    what: str
    started: str
    pid_key: str
    error: Callable[[str], EdgetuneError]


# ---- the parent (the stage) ---------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The worker's environment (EDGETUNE_* settings included), with the project importable even
    when it is run from a checkout rather than installed, and no progress bars in the log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")  # the trainer's bar would fill the log the error quotes
    env["PYTHONUNBUFFERED"] = "1"  # the log is complete up to the moment the child dies
    return env


def end_child(proc: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> None:
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


def log_tail(log: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(log.stat().st_size - chars, 0))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


def exit_reason(rc: int) -> str:
    if rc == -signal.SIGKILL:
        return "was killed by SIGKILL (e.g. out of memory)"
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def wait_child(
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
        end_child(proc)
        raise


def run_in_child(
    ctx: JobContext,
    kind: ChildKind,
    spec: dict[str, Any],
    should_stop: Callable[[], BaseException | None],
    *,
    label: str,
    poll_s: float = POLL_S,
) -> str:
    """Run `kind`'s child on `spec` (JSON-able) and return the text it wrote as its result.

    `should_stop` is called about every `poll_s` seconds; an exception it returns (JobCancelled,
    BudgetExhausted) is raised here once the child is gone. `label` names the run in the log's
    header line and the start event.

    Raises:
        EdgetuneError: `kind.error(...)`: the child exited non-zero, was killed, or wrote no
            result; the message quotes its log's end.
    """
    run_dir = ctx.work_dir / kind.dir_name
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result, log = run_dir / "spec.json", run_dir / "result.json", run_dir / kind.log_name
    spec_path.write_text(json.dumps(spec, indent=1))
    result.unlink(missing_ok=True)  # a result left by an earlier attempt must not be read as this one's
    args = ["--job-id", ctx.job_id, "--work-dir", str(ctx.work_dir), "--spec", str(spec_path)]
    args += ["--result", str(result), "--parent-pid", str(os.getpid())]
    with log.open("ab") as fh:
        fh.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} {label} for {ctx.job_id}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", kind.module, *args],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,  # its own process group: one killpg ends it and its children
        )
    try:
        ctx.event(
            kind.started.format(pid=proc.pid, label=label), data={kind.pid_key: proc.pid, "log": str(log)}
        )
    except BaseException:  # nobody would wait for it
        end_child(proc)
        raise
    rc = wait_child(proc, should_stop, poll_s)
    if rc != 0 or not result.exists():
        reason = exit_reason(rc) if rc != 0 else "exited without writing its result"
        raise kind.error(f"{kind.what} {reason}; the end of its log ({log}):\n{log_tail(log)}")
    return result.read_text()


# ---- the child ----------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
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
    from domain.job_config import JobConfig
    from infra.db import session_scope
    from infra.models import Job
    from worker.context import JobContext

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise SystemExit(f"job {job_id} does not exist")
        return JobContext(
            job.id, job.org_id, JobConfig.model_validate(job.config), work_dir, dict(job.state or {})
        )


def child_main(
    fn: ChildFunction,
    description: str,
    argv: list[str] | None = None,
    *,
    module: str | None = None,
    processes: Callable[[dict[str, Any]], int] = lambda spec: 1,
) -> int:
    """The child's entry point: watch the parent, run `fn` on the spec, write its result whole.

    When `processes(spec)` > 1 this process is the launcher instead (recipes/distributed.py): it
    starts `module` again as that many ranks, each watching it as their parent, and rank 0 writes
    the result. Killing this process group ends every rank."""
    from recipes.distributed import is_main_process, launch, launched

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True, help="the JSON spec the stage wrote")
    parser.add_argument("--result", type=Path, required=True, help="where the result goes")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    spec = json.loads(args.spec.read_text())
    n = processes(spec)
    if n > 1 and not launched():
        assert module is not None, "a multi-process child names its module"
        ranks = ["--job-id", args.job_id, "--work-dir", str(args.work_dir), "--spec", str(args.spec)]
        ranks += ["--result", str(args.result), "--parent-pid", str(os.getpid())]
        launch(module, ranks, n)
        return 0
    out = fn(spec, args.job_id, args.work_dir)
    if is_main_process():
        tmp = args.result.with_suffix(".tmp")
        tmp.write_text(out)
        tmp.replace(args.result)  # whole or absent: the parent never reads half a result
    return 0
