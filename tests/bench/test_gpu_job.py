"""`python -m bench.gpu_job` on the CPU, on the tiny shape: the whole job path on embedded defaults
(API and worker as child processes, SQLite, local store), as the GPU machine runs it on LFM2-350M.
llama.cpp and onnxruntime are made unimportable, as they are there: the gpu-server target must
need neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

BLOCKED = ("llama_cpp", "onnxruntime")


def _blocker(root: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes each BLOCKED package fail to import."""
    for name in BLOCKED:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    return root


def test_gpu_job_runs_the_whole_job_on_the_cpu(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETUNE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(_blocker(tmp_path / "blocked")), str(ROOT)])
    out = tmp_path / "summary.json"
    args = ["--device", "cpu", "--shape", "tiny", "--rows", "120", "--batch-size", "4"]
    args += ["--var-dir", str(tmp_path / "var"), "--out", str(out), "--timeout", "600"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_job", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stdout[-2000:]
    summary = json.loads(out.read_text())
    assert summary["status"] == "succeeded" and summary["device"] == "cpu"
    assert set(summary["stage_seconds"]) == {
        "prepare",
        "synthesize",
        "train",
        "evaluate",
        "export",
        "gate",
        "publish",
    }
    assert summary["trained_tokens"] > 0 and summary["tokens_per_second_logged"]
    assert summary["tokens_per_second_train_stage"] > 0
    assert "stage train" in proc.stdout and "tokens/s" in proc.stdout
    # the shipped gpu-server artifact: merged weights and the PEFT adapter beside them
    store = tmp_path / "var" / "store" / "artifacts"
    shipped = {p.name for p in store.rglob("*") if p.is_file()}
    assert "adapter_model.safetensors" in shipped or any(n.endswith(".tar") for n in shipped), shipped
