"""What a device agent reports for a GGUF on this machine (eval/device_bench.py, the code the agent
runs): load time, prefill and decode tokens/s, peak memory, per thread count; with
`--llama-bench PATH` also what an agent running llama.cpp's own binary reports for the same file
(eval/llama_bench.py), so the two runners can be compared.

    .venv/bin/python -m bench.device_agent [--gguf PATH] [--threads 1,2] [--context 4096]
        [--llama-bench .venv/bin/llama-bench]

The default GGUF is the bundled SmolLM2-135M-Instruct teacher (a real model; the only one offline).
Prints one markdown row per thread count for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.device_bench import device_facts, measure_gguf
from eval.llama_bench import llama_bench_version, measure_llama_bench
from synth.llama_server import bundled_teacher_gguf


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--llama-bench", type=Path, default=None)
    args = parser.parse_args()
    gguf = args.gguf or bundled_teacher_gguf()
    facts = device_facts(1)
    size = gguf.stat().st_size / 2**20
    print(f"{gguf.name}, {size:.0f} MB, on {facts['cpu']}, {facts['runtime_version']}")  # noqa: T201
    print("| runner | threads | load s | prefill tokens/s | decode tokens/s | peak memory MB |")  # noqa: T201
    print("|---|---|---|---|---|---|")  # noqa: T201
    for threads in (int(t) for t in args.threads.split(",")):
        sizes = (args.context, args.prompt_tokens, args.decode_tokens, threads)
        runs = [(str(facts["runtime_version"]), measure_gguf(gguf, *sizes))]
        if args.llama_bench is not None:
            runs.append(
                (
                    str(llama_bench_version(args.llama_bench)),
                    measure_llama_bench(args.llama_bench, gguf, *sizes),
                )
            )
        for runner, r in runs:
            load = "-" if r["load_seconds"] is None else f"{r['load_seconds']:.2f}"
            print(  # noqa: T201
                f"| {runner} | {threads} | {load} | {r['prefill_tokens_per_s']:.0f} | "
                f"{r['decode_tokens_per_s']:.1f} | {r['peak_memory_mb'] or '-'} |"
            )


if __name__ == "__main__":
    main()
