"""How fast do the recipes train? Runs each recipe's own `train()` (or, with --trl-defaults, plain
TRL with its defaults beside it) for a few steps on LFM2 shapes with random weights, and prints a
markdown table: trained tokens/s, peak memory and MFU.

    .venv/bin/python -m bench.recipes_throughput [--shapes tiny,350m] [--recipes lora_sft,full_sft,dpo]
        [--steps 4] [--warmup 1] [--batch-size 4] [--seq-len 128] [--device cpu|cuda]
        [--peak-tflops X] [--threads N] [--trl-defaults]

Shapes: `tiny` is the test model of tests/support/tiny_lfm2.py (6 layers, d=256, its own 1k-token
vocabulary); `350m` and `1.2b` are transformers `Lfm2Config`s with the real LFM2-350M / LFM2-1.2B
values (16 layers, 6 of them attention at 2,5,8,10,12,14; d=1024 / 2048; block_ff_dim 6912 / 12288,
auto-adjusted to FFN width 4608 / 8192; 16 / 32 heads, 8 KV heads; tied 65,536 vocabulary), which
give exactly 354,483,968 and 1,170,340,608 parameters (checked in tests/bench). Weights are random
and saved in bf16 as the real checkpoints are. The tokenizer is the tiny test BPE for every shape
(the real LFM2 tokenizer is not reachable offline): it decides how many tokens a row becomes, not
what a token costs, since the embedding and LM head are the shape's full 65,536 wide.

What is measured, per shape x recipe, each in a fresh process (so peaks do not carry over):
- tokens/s: non-padding tokens the trainer counted (`include_num_input_tokens_seen="non_padding"`,
  which every recipe sets; DPO counts chosen and rejected sequences) over the wall time between
  the end of step `--warmup` and the end of the last step. The first steps (lazy allocations,
  kernel selection, the allocator growing) are excluded that way; so are loading the model,
  tokenizing the data and saving the outputs, which fall outside that window.
- peak memory: CUDA: `torch.cuda.max_memory_allocated` at the end of training (weights included,
  the merge and save after it not). CPU: the process's peak RSS (`ru_maxrss`) at the end of
  training minus its RSS just before the recipe started (after imports), i.e. what loading and
  training added.
- MFU: achieved model FLOP/s / peak FLOP/s, with model FLOPs per trained token from
  recipes.estimate (the plan's own formulas): 6N for full fine-tuning (forward 2N, backward 4N
  for input and weight gradients), 4N for LoRA (the frozen weights get no weight gradient: forward
  2N + input gradient 2N; the adapters' own FLOPs are under 1% and ignored), plus the attention
  term 12 * L_attn * d * S (QK^T and AV, forward and backward, non-causal). S is the measured mean
  sequence length. DPO adds the frozen reference's forward pass on every sequence (a third of
  full training: 2N + 4 * L_attn * d * S). Activation checkpointing's recomputation is not counted
  (model FLOPs, not hardware FLOPs).
- peak FLOP/s: `--peak-tflops`, else on CUDA the H100's dense bf16 datasheet figure (989 TFLOP/s,
  recipes.estimate.GPU_CLASSES) and on CPU the best fp32 rate of a 2048^3 matmul measured in this
  run before and after the cases, with the same threads (the higher one is used). A CPU MFU is
  against that nominal figure and is rough: the cores are shared, and a matmul is not a datasheet.
- load: the 1-minute load average at the end of each case; on shared cores it moves tokens/s.

`--trl-defaults` adds, for each recipe, a row for plain TRL on the same model, data, batch size,
max length and steps (and `use_cpu` on CPU), with everything else at TRL's defaults (SFTTrainer /
DPOTrainer: bf16 on, gradient checkpointing on, the checkpoint's dtype, loss on every token; the
LoRA rows get the same LoraConfig as the recipe). The one addition is the token counter, which
only counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from recipes.estimate import GPU_CLASSES, Method, ModelShape, flops_per_token, reference_forward_flops

RECIPES = ("lora_sft", "full_sft", "dpo")
LFM2_ATTENTION_LAYERS = (2, 5, 8, 10, 12, 14)  # of 16, in both LFM2-350M and LFM2-1.2B
H100_BF16_FLOPS = next(g for g in GPU_CLASSES if g.name == "h100-80gb").bf16_tflops * 1e12
FILLER = (
    "the review says the product arrived early and the battery lasts all day but the screen is dim "
    "and the price was good so the customer would buy it again from this shop next year"
).split()


@dataclass(frozen=True)
class Shape:
    hidden: int
    ff: int  # block_ff_dim as in the config; LFM2 auto-adjusts it to int(2 ff / 3), rounded up to 256
    layers: int
    heads: int
    kv_heads: int
    attention_layers: tuple[int, ...]
    vocab: int | None  # None: the tokenizer's own size (the tiny test model)


SHAPES = {
    "tiny": Shape(256, 768, 6, 4, 2, (2, 5), None),  # tests/support/tiny_lfm2.py
    "350m": Shape(1024, 6912, 16, 16, 8, LFM2_ATTENTION_LAYERS, 65536),  # LiquidAI/LFM2-350M
    "1.2b": Shape(2048, 12288, 16, 32, 8, LFM2_ATTENTION_LAYERS, 65536),  # LiquidAI/LFM2-1.2B
}


# ---- model and data -----------------------------------------------------------------------------


def lfm2_config(shape: Shape, tok: Any) -> Any:
    from transformers import Lfm2Config

    return Lfm2Config(
        vocab_size=shape.vocab or len(tok),
        hidden_size=shape.hidden,
        intermediate_size=shape.ff,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        layer_types=[
            "full_attention" if i in shape.attention_layers else "conv" for i in range(shape.layers)
        ],
        max_position_embeddings=128000,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )


def bench_tokenizer() -> Any:
    """The tiny test BPE, carrying the LFM2 inference template as a real checkpoint's tokenizer does
    (the recipes swap in their training template themselves)."""
    from recipes.chat_data import TEMPLATES_DIR, inference_template
    from tests.support.tiny_lfm2 import build_tokenizer

    return build_tokenizer(inference_template((TEMPLATES_DIR / "lfm2.jinja").read_text()))


def write_model(shape_name: str, out_dir: str) -> dict[str, Any]:
    """Save a random-weight LFM2 of `shape_name` (bf16) with the test tokenizer; its config and
    exact parameter count."""
    import torch
    from transformers import Lfm2ForCausalLM

    torch.manual_seed(0)
    tok = bench_tokenizer()
    config = lfm2_config(SHAPES[shape_name], tok)
    model: Any = Lfm2ForCausalLM(config)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"config": config.to_dict(), "params": sum(p.numel() for p in model.parameters())}


def filler(n_words: int, row: int) -> str:
    # rotate the word list per row so no two rows are the same text
    return " ".join(FILLER[(row + i) % len(FILLER)] for i in range(n_words))


def conversation(n_words: int, row: int) -> list[dict[str, str]]:
    """A user turn of `n_words` and an assistant answer a third as long: every token is computed
    in the forward and backward passes, the answer's carry the SFT loss."""
    return [
        {"role": "user", "content": f"Request {row}: {filler(n_words, row)}"},
        {"role": "assistant", "content": filler(max(1, n_words // 3), row + 7)},
    ]


def rendered_length(tok: Any, messages: list[dict[str, str]]) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=False))


def fit_conversation(tok: Any, seq_len: int, row: int) -> list[dict[str, str]]:
    """Row `row` with the most user words whose rendered conversation fits in seq_len tokens
    (binary search; fitted per row, since each row's words tokenize a little differently)."""
    lo, hi = 1, 4 * seq_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if rendered_length(tok, conversation(mid, row)) <= seq_len else (lo, mid - 1)
    return conversation(lo, row)


def sft_rows(tok: Any, n: int, seq_len: int) -> list[dict[str, Any]]:
    return [{"messages": fit_conversation(tok, seq_len, i)} for i in range(n)]


def preference_rows(tok: Any, n: int, seq_len: int) -> list[dict[str, Any]]:
    """TRL's conversational preference rows: prompt + chosen fits seq_len; the rejected answer has
    as many words (other ones), so prompt + rejected is about as long, at most truncated by the
    trainer's max_length to seq_len."""
    rows = []
    for i in range(n):
        user, answer = fit_conversation(tok, seq_len, i)
        n_words = len(answer["content"].split())
        rejected = {"role": "assistant", "content": filler(n_words, i + 11)}
        rows.append({"prompt": [user], "chosen": [answer], "rejected": [rejected]})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- measurement --------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


class StepClock(TrainerCallback):
    """(time, tokens seen) at the end of every optimizer step, and the memory peak at train end."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[float, int]] = []
        self.peak_bytes = 0

    def _sync(self) -> None:
        if self.cuda:  # kernels run asynchronously: wait for the step's work before reading the clock
            import torch

            torch.cuda.synchronize()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._sync()
        self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.cuda:
            import torch

            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self.peak_bytes = peak_rss_bytes()


@dataclass
class Case:
    shape: str
    recipe: str
    runner: str  # "edgetune" (the recipe's train()) or "trl-defaults"
    model_dir: str
    steps: int
    warmup: int
    batch_size: int
    seq_len: int
    device: str
    threads: int | None


def hide_cuda(device: str) -> None:
    # Before torch is imported in this process: the recipes pick CUDA whenever they can see it.
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def recipe_config(case: Case, data_dir: Path) -> tuple[Any, Any]:
    """The recipe's own config and train function, on the bench's data and fixed batch/steps."""
    from infra.job_config import Hyperparameters

    model_dir = Path(case.model_dir)
    tok, n_rows = bench_tokenizer(), case.steps * case.batch_size
    common: dict[str, Any] = {
        "base_model_dir": model_dir,
        "output_dir": data_dir / "run",
        "hyperparameters": Hyperparameters(n_epochs=1, batch_size=case.batch_size),
        "max_length": case.seq_len,
        "max_steps": case.steps,
        "save_steps": 1_000_000,  # no checkpoint inside the timed steps
        "resume": False,
    }
    if case.recipe == "dpo":
        from recipes.dpo import DPORecipeConfig, train

        path = write_jsonl(data_dir / "train.jsonl", preference_rows(tok, n_rows, case.seq_len))
        return DPORecipeConfig(train_file=path, **common), train
    path = write_jsonl(data_dir / "train.jsonl", sft_rows(tok, n_rows, case.seq_len))
    if case.recipe == "full_sft":
        from recipes.full_sft import FullSFTConfig
        from recipes.full_sft import train as full_train

        return FullSFTConfig(train_file=path, **common), full_train
    from recipes.lora_sft import LoraSFTConfig
    from recipes.lora_sft import train as lora_train

    return LoraSFTConfig(train_file=path, **common), lora_train


def run_recipe(case: Case, data_dir: Path, clock: StepClock) -> int:
    """The recipe's own train(); returns its trainable parameter count."""
    cfg, train = recipe_config(case, data_dir)
    result = train(cfg, callbacks=[clock])
    training = getattr(result, "training", result)  # DPOResult wraps the common TrainResult
    return int(training.trainable_params)


def run_trl_defaults(case: Case, data_dir: Path, clock: StepClock) -> int:
    """Plain TRL on the same model, rows, batch size, max length and steps; TRL's defaults otherwise."""
    from datasets import Dataset
    from peft import LoraConfig

    from infra.job_config import LoraSettings
    from recipes.base_models import LFM2_LORA_TARGETS
    from recipes.training_common import parameter_counts

    tok, n_rows = bench_tokenizer(), case.steps * case.batch_size
    lora = LoraSettings()  # the recipe's defaults: r 8, alpha 16, dropout 0.05, LFM2's targets
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(LFM2_LORA_TARGETS)
    )
    shared: dict[str, Any] = {
        "output_dir": str(data_dir / "trl"),
        "max_steps": case.steps,
        "per_device_train_batch_size": case.batch_size,
        "max_length": case.seq_len,
        "save_strategy": "no",
        "report_to": "none",
        "include_num_input_tokens_seen": "non_padding",  # counts tokens, changes nothing else
        "use_cpu": case.device == "cpu",  # TRL's bf16 default refuses a CPU it is not told to use
    }
    if case.recipe == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer: Any = DPOTrainer(
            model=case.model_dir,
            args=DPOConfig(**shared),
            train_dataset=Dataset.from_list(preference_rows(tok, n_rows, case.seq_len)),
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[clock],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=case.model_dir,
            args=SFTConfig(**shared),
            train_dataset=Dataset.from_list(sft_rows(tok, n_rows, case.seq_len)),
            processing_class=tok,
            peft_config=peft_config if case.recipe == "lora_sft" else None,
            callbacks=[clock],
        )
    trainer.train()
    return parameter_counts(trainer.model)[0]


def measure_case(case: Case) -> dict[str, Any]:
    """One run in this (fresh) process: tokens and seconds of the timed steps, peak memory."""
    hide_cuda(case.device)
    import torch

    set_threads(case.threads)
    cuda = case.device == "cuda"
    if cuda and not torch.cuda.is_available():  # the recipes would quietly train on the CPU instead
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(cuda)
    baseline = 0 if cuda else rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_recipe if case.runner == "edgetune" else run_trl_defaults
        trainable = run(case, Path(tmp), clock)
    (t0, tok0), (t1, tok1) = clock.marks[case.warmup - 1], clock.marks[-1]
    return {
        **asdict(case),
        "timed_steps": len(clock.marks) - case.warmup,
        "tokens": tok1 - tok0,
        "seconds": t1 - t0,
        "peak_bytes": clock.peak_bytes - baseline,
        "trainable": trainable,
        "threads_used": torch.get_num_threads(),
        "load": os.getloadavg()[0],
    }


def cpu_matmul_flops(threads: int | None, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n x n matmul (2 n^3 FLOPs) on this CPU: the nominal CPU peak."""
    hide_cuda("cpu")
    import torch

    set_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # first call: thread pool start-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


# ---- FLOPs and the table ------------------------------------------------------------------------


def model_flops_per_token(shape: ModelShape, recipe: str, mean_seq: float) -> float:
    """Model FLOPs per trained token (see the module docstring): the plan's flops_per_token, plus
    the reference's forward pass for DPO. Every LoRA row is 4N; full_sft is 6N."""
    method: Method = "full" if recipe == "full_sft" else "lora"
    seq = round(mean_seq)
    flops = flops_per_token(shape, method, seq)
    if recipe == "dpo":  # both runners' DPO use LoRA, whose reference is the adapter-less base
        flops += reference_forward_flops(shape, 1, seq)
    return flops


def sequences_per_step(recipe: str, batch_size: int) -> int:
    return 2 * batch_size if recipe == "dpo" else batch_size  # DPO runs chosen and rejected together


def summarize(result: dict[str, Any], shape: ModelShape, peak_flops: float) -> dict[str, Any]:
    seqs = result["timed_steps"] * sequences_per_step(result["recipe"], result["batch_size"])
    mean_seq = result["tokens"] / seqs
    per_token = model_flops_per_token(shape, result["recipe"], mean_seq)
    tokens_per_s = result["tokens"] / result["seconds"]
    achieved = per_token * tokens_per_s
    return {
        **result,
        "mean_seq": mean_seq,
        "gflop_per_token": per_token / 1e9,
        "tokens_per_s": tokens_per_s,
        "achieved_tflops": achieved / 1e12,
        "mfu_pct": 100 * achieved / peak_flops,
    }


def fmt_bytes(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| shape | recipe | runner | params (trainable) | steps timed | mean seq | tokens | s "
        "| tokens/s | peak mem | GFLOP/token | achieved TFLOP/s | MFU | load |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {r['shape']} | {r['recipe']} | {r['runner']} | {r['params'] / 1e6:.1f}M "
        f"({r['trainable'] / 1e6:.2f}M) | {r['timed_steps']} | {r['mean_seq']:.0f} | {r['tokens']} "
        f"| {r['seconds']:.2f} | {r['tokens_per_s']:.0f} | {fmt_bytes(r['peak_bytes'])} "
        f"| {r['gflop_per_token']:.3g} | {r['achieved_tflops']:.3g} | {r['mfu_pct']:.1f}% "
        f"| {r['load']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="tiny", help=f"comma-separated: {', '.join(SHAPES)}")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {', '.join(RECIPES)}")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=4, help="rows (DPO: pairs) per step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row (max_length)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--peak-tflops", type=float, help="peak for MFU (default: H100 bf16 989; CPU: measured)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--trl-defaults", action="store_true", help="also run plain TRL with its defaults")
    args = p.parse_args()
    unknown = set(args.shapes.split(",")) - set(SHAPES) | set(args.recipes.split(",")) - set(RECIPES)
    if unknown:
        p.error(f"unknown shape or recipe: {', '.join(sorted(unknown))}")
    if args.steps <= args.warmup or args.warmup < 1:
        p.error("need --warmup >= 1 and --steps > --warmup")
    return args


def in_fresh_process(fn: Any, *args: Any) -> Any:
    """fn(*args) in a new interpreter: its own peak RSS / CUDA peak, nothing cached from earlier runs."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def run_case(case: Case) -> dict[str, Any]:
    """measure_case in a fresh process; a failure becomes a row naming it, so one recipe that
    breaks (out of memory, say) does not cost the other rows of a GPU session."""
    try:
        result: dict[str, Any] = in_fresh_process(measure_case, case)
        return result
    except Exception as exc:  # reported under the table; the other cases still run
        return {**asdict(case), "error": f"{type(exc).__name__}: {exc}"[:200]}


def peak_flops(args: argparse.Namespace, measured: list[float]) -> tuple[float, str]:
    if args.peak_tflops:
        return args.peak_tflops * 1e12, "given with --peak-tflops"
    if args.device == "cuda":
        return H100_BF16_FLOPS, "H100 SXM dense bf16 datasheet"
    return max(measured), "best fp32 2048^3 matmul, measured before and after the runs: " + ", ".join(
        f"{m / 1e9:.0f}" for m in measured
    ) + " GFLOP/s"


def machine(args: argparse.Namespace) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    libs = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "peft"))
    return f"{args.device}: {os.cpu_count()} cores {cpu}; Python {platform.python_version()}, {libs}"


def main() -> None:
    args = parse_args()
    cases = [(s, r) for s in args.shapes.split(",") for r in args.recipes.split(",")]
    runners = ["edgetune", "trl-defaults"] if args.trl_defaults else ["edgetune"]
    measured = [] if args.device == "cuda" else [in_fresh_process(cpu_matmul_flops, args.threads)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        shapes: dict[str, tuple[ModelShape, int]] = {}
        for name in dict.fromkeys(s for s, _ in cases):
            built = in_fresh_process(write_model, name, f"{tmp}/{name}")
            shapes[name] = (ModelShape.from_config(built["config"], built["params"]), built["params"])
        for shape_name, recipe in cases:
            for runner in runners:
                case = Case(
                    shape_name, recipe, runner, f"{tmp}/{shape_name}", args.steps, args.warmup,
                    args.batch_size, args.seq_len, args.device, args.threads,
                )  # fmt: skip
                result = run_case(case)
                result["params"] = shapes[shape_name][1]
                results.append(result)
                print(json.dumps(result), flush=True)  # noqa: T201
    if args.device == "cpu":
        measured.append(in_fresh_process(cpu_matmul_flops, args.threads))
    peak, source = peak_flops(args, measured)
    rows = [summarize(r, shapes[r["shape"]][0], peak) for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    print(f"\n{machine(args)}\npeak {peak / 1e12:.4g} TFLOP/s ({source})\n")  # noqa: T201
    print(table(rows))  # noqa: T201
    for r in failed:
        print(f"\nfailed: {r['shape']} {r['recipe']} {r['runner']}: {r['error']}")  # noqa: T201


if __name__ == "__main__":
    main()
