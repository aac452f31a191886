"""Device artifacts of an LFM2 shape, as the export stage makes and scores them: export time, size,
ONNX parity with torch, and decode speed / memory in each artifact's own runtime on this host.

    .venv/bin/python -m bench.device_artifacts [--shapes tiny,350m] [--quants Q4_0,Q4_K_M] [--threads 2]

Weights are random (the shapes are LFM2-350M's / LFM2-1.2B's published configs, from
bench/recipes_throughput.py), which is fine for size, speed and memory but says nothing of
quality: the eval gate measures that on real fine-tunes. Decode speed is eval/runners.py's fixed
32-token run and memory its peak-RSS growth, at a 4096-token context (the phone and browser cap).
Prints one markdown row per artifact for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.recipes_throughput import write_model

CONTEXT = 4096
ROWS = [
    {
        "messages": [
            {"role": "user", "content": "Classify: great product"},
            {"role": "assistant", "content": "x"},
        ]
    }
]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - start


def _run(kind: str, path: Path, threads: int) -> dict[str, Any]:
    from eval.runners import generate_gguf, generate_onnx
    from eval.runtime_stats import RuntimeStats

    stats = RuntimeStats(runtime="llama.cpp" if kind == "gguf" else "onnxruntime")
    if kind == "gguf":
        generate_gguf(path, ROWS, n_ctx=CONTEXT, max_new_tokens=4, n_threads=threads, stats=stats)
    else:
        generate_onnx(path, ROWS, max_new_tokens=4, n_ctx=CONTEXT, stats=stats)
    return stats.to_dict()


def bench_shape(shape: str, quants: list[str], threads: int, work: Path) -> list[dict[str, Any]]:
    from export.gguf_export import convert_to_gguf, quantize_gguf
    from export.onnx_export import export_onnx

    model_dir = work / shape
    info = write_model(shape, str(model_dir))
    rows = []
    files, seconds = _timed(export_onnx, model_dir, work / f"{shape}-onnx")
    rows.append({"artifact": "ONNX q4", "path": files[0], "kind": "onnx", "export_s": seconds})
    f16, f16_s = _timed(convert_to_gguf, model_dir, work / f"{shape}-f16.gguf", "f16")
    for quant in quants:
        out, q_s = _timed(quantize_gguf, f16, work / f"{shape}-{quant}.gguf", quant)
        rows.append({"artifact": f"GGUF {quant}", "path": out, "kind": "gguf", "export_s": f16_s + q_s})
    for row in rows:
        row.update(shape=shape, params=info["params"], mb=row["path"].stat().st_size / 2**20)
        row["stats"] = _run(row["kind"], row["path"], threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,350m")
    parser.add_argument("--quants", default="Q4_0,Q4_K_M")
    parser.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print("| shape | artifact | MB | export s | runtime | decode tok/s | peak RSS growth MB |")  # noqa: T201
    print("|---|---|---|---|---|---|---|")  # noqa: T201
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            for r in bench_shape(shape, args.quants.split(","), args.threads, Path(tmp)):
                s = r["stats"]
                print(  # noqa: T201
                    f"| {shape} ({r['params'] / 1e6:.0f}M) | {r['artifact']} | {r['mb']:.1f} | "
                    f"{r['export_s']:.1f} | {s['runtime']} | {s['decode_tokens_per_s']:.1f} | "
                    f"{s['peak_rss_growth_mb']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
