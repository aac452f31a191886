"""`python -m bench.fleet_throughput` on a small fleet: two workers (own var dir, own process
group) on the machine's PostgreSQL and Redis, two jobs at once. What it prints must be what
happened: both jobs succeeded, one on each worker (each worker holds one job at a time, prefetch 1),
and jobs/hour is the jobs over the measured wall time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_two_workers_run_two_jobs_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETUNE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fleet_throughput", "--workers", "2", "--jobs", "2",
         "--rows", "16", "--epochs", "1", "--threads-per-worker", "1", "--timeout", "900",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (fleet,) = json.loads(out.read_text())["fleets"]
    assert fleet["statuses"] == {"succeeded": 2}
    assert fleet["workers"] == 2 and fleet["threads_per_worker"] == 1
    assert fleet["jobs_per_worker"] == [1, 1]  # side by side, not one after the other
    assert fleet["jobs_per_hour"] == pytest.approx(2 * 3600 / fleet["wall_s"], rel=0.01)
    # each job's own time (created to finished, whole seconds) lies within the measured wall time
    assert 0 < fleet["job_mean_s"] <= fleet["job_max_s"] <= fleet["wall_s"] + 2
