"""`python -m bench.gpu_job` on the CPU, on the tiny shape: the whole job path on embedded defaults
(API and worker as child processes, SQLite, local store), as the GPU machine runs it on LFM2-350M.
llama.cpp and onnxruntime are made unimportable, as they are there: the gpu-server target must
need neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

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


def _run_gpu_job(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """bench.gpu_job in a fresh interpreter without this session's services; (summary, stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETUNE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(_blocker(tmp_path / "blocked")), str(ROOT)])
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_job", *args, "--var-dir", str(tmp_path / "var"), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stdout[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_gpu_job_runs_the_whole_job_on_the_cpu(tmp_path) -> None:
    cpu_tiny = "--device cpu --shape tiny --rows 120 --batch-size 4 --timeout 1500".split()
    summary, stdout = _run_gpu_job(tmp_path, *cpu_tiny)
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
    assert "stage train" in stdout and "tokens/s" in stdout
    # the shipped gpu-server artifact: merged weights and the PEFT adapter beside them
    (tar,) = (tmp_path / "var" / "store" / "artifacts").rglob("gpu-server.tar")
    with tarfile.open(tar) as t:
        shipped = set(t.getnames())
    assert {"model.safetensors", "adapter/adapter_model.safetensors"} <= shipped, shipped


@pytest.mark.gpu
def test_gpu_job_trains_lfm2_350m_on_the_gpu(tmp_path) -> None:
    """The command the GPU machine runs: LoRA on a random-weight LFM2-350M in bf16 on CUDA."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    summary, _ = _run_gpu_job(tmp_path, "--device", "cuda", "--shape", "350m", "--rows", "300")
    assert summary["status"] == "succeeded" and summary["device"] == "cuda"
    assert summary["tokens_per_second_median"] > 0
