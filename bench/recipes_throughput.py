"""How fast do the recipes train, against plain TRL and against themselves before the GPU work?
Runs, side by side in one run, for each shape x recipe, up to three variants for a few steps on
random-weight LFM2 shapes and realistic variable-length chat rows, and prints a markdown table:

- `trl`: plain TRL with its defaults on the same model, rows, batch size, max length and steps;
- `before`: the recipe's own `train()` with `speed="reference"` (the settings it had before the
  fast GPU path: "edgetune before");
- `now`: the recipe's own `train()` with `speed="auto"` (the fast path it picks itself).
`speed=` is passed only when the recipe's config has that field; without it `before` and `now`
run the same recipe and the table says so in their settings column.

    .venv/bin/python -m bench.recipes_throughput [--shapes tiny,350m,1.2b] [--recipes lora_sft,full_sft,dpo]
        [--variants trl,before,now] [--lengths chat|fixed] [--steps 4] [--warmup 1] [--batch-size 4]
        [--seq-len 2048] [--seed 0] [--device cpu|cuda] [--peak-tflops 989] [--threads N]
        [--out report.md] [--json results.json] [--case-timeout 300] [--budget-s S] [--logs-dir DIR]

On the GPU (2 shapes x 3 recipes x 3 variants = 18 cases), e.g.
    python3 -m bench.recipes_throughput --device cuda --shapes 350m,1.2b \\
        --recipes lora_sft,full_sft,dpo --steps 8 --warmup 3 --batch-size 8 --seq-len 2048 \\
        --out bench-gpu.md --json bench-gpu.json --budget-s 480
Timing expectations there (H200, from the first run's ~30-60 s per case with 8 x 512 rows): the
device probe (an 8192^3 bf16 matmul) ~10 s; writing a shape's model once ~10 s (350m) / ~25 s
(1.2b), reused by all its cases; per case ~15-30 s: a fresh interpreter importing torch,
transformers and trl (~8 s), loading the model, the steps, and the recipe's merge and save
(outside the timed window but inside the case). 18 cases fit about 8 minutes; `--budget-s` stops
starting new cases once that many seconds have passed (the rest are reported as skipped), and
`--out` / `--json` are rewritten after every case, so a run cut short still leaves its rows.

Shapes: `tiny` is the test model of tests/support/tiny_lfm2.py (6 layers, d=256, its own 1k-token
vocabulary); `350m` and `1.2b` are transformers `Lfm2Config`s with the real LFM2-350M / LFM2-1.2B
values (16 layers, 6 of them attention at 2,5,8,10,12,14; d=1024 / 2048; block_ff_dim 6912 / 12288,
auto-adjusted to FFN width 4608 / 8192; 16 / 32 heads, 8 KV heads; tied 65,536 vocabulary), which
give exactly 354,483,968 and 1,170,340,608 parameters (checked in tests/bench). Weights are random
and saved in bf16 as the real checkpoints are. The tokenizer is the tiny test BPE for every shape
(the real LFM2 tokenizer is not reachable offline): it decides how many tokens a row becomes, not
what a token costs, since the embedding and LM head are the shape's full 65,536 wide.

Rows (`--lengths`): `chat` (default) draws each row's length, in tokens as rendered with the chat
template, from a log-normal fitted to public chat SFT data (see CHAT_MEDIAN_TOKENS), seeded by
`--seed`, clipped to [32, --seq-len]; `fixed` makes every row just under --seq-len (the first
GPU run's rows). Either way the user turn is about two thirds of a row and the assistant answer,
which carries the SFT loss, about a third. The rows are made once per run, shared by every case
(DPO: the chosen answer of a pair fits the drawn length, the rejected one has as many words), and
only as many as the steps need: steps x batch x ROW_MARGIN (room for a fast path that packs
several rows into one sequence).

What is measured, per shape x recipe x variant, each in a fresh process (so peaks do not carry
over; a case that fails, runs out of memory or hangs past --case-timeout becomes a row with its
error's first line, and the run goes on):
- tokens/s: non-padding tokens the trainer counted (`include_num_input_tokens_seen="non_padding"`,
  which every recipe sets and the trl variant adds; DPO counts chosen and rejected sequences) over
  the wall time between the end of step `--warmup` and the end of the last step. The first steps
  (lazy allocations, kernel selection, the allocator growing) are excluded that way; so are
  loading the model, tokenizing the data and saving the outputs, which fall outside that window.
- peak memory: CUDA: `torch.cuda.max_memory_allocated` at the end of training (weights included,
  the merge and save after it not). CPU: the process's peak RSS (`ru_maxrss`) at the end of
  training minus its RSS just before the recipe started (after imports), i.e. what loading and
  training added.
- MFU: achieved model FLOP/s / peak FLOP/s, with model FLOPs per trained token from
  recipes.estimate (the plan's own formulas): 6N for full fine-tuning (forward 2N, backward 4N
  for input and weight gradients), 4N for LoRA (the frozen weights get no weight gradient: forward
  2N + input gradient 2N; the adapters' own FLOPs are under 1% and ignored), plus the attention
  term 12 * L_attn * d * S (QK^T and AV, forward and backward, non-causal). With rows of varying
  length a row of S tokens costs S^2 in attention, so per token the right S is the token-weighted
  mean sum(S^2) / sum(S) of the rows (for fixed rows, S itself); padding is not model FLOPs. DPO
  adds the frozen reference's forward pass on every sequence (a third of full training:
  2N + 4 * L_attn * d * S). Activation checkpointing's recomputation is not counted (model
  FLOPs, not hardware FLOPs).
- two peaks, two MFU columns: `--peak-tflops` (default 989 TFLOP/s, the H100 / H200 dense bf16
  datasheet figure, recipes.estimate.GPU_CLASSES), and a matmul measured in this run: on CUDA the
  median of timed 8192^3 bf16 `torch.matmul`s after warm-up (what the GPU really sustains, ~790
  TFLOP/s on the first H200 run), on CPU the best fp32 2048^3 matmul with the same threads,
  measured before and after the cases (the higher one is used). A CPU MFU is rough: the cores are
  shared, and a matmul is not a datasheet.
- speed-up: tokens/s of `now` over `trl` and over `before` of the same shape x recipe.
- settings: for `now`, what the recipe chose (its result's `speed_plan`, when it reports one:
  padding_free, micro_batch_size, grad_accum, activation_checkpointing, ...).
- load: the 1-minute load average at the end of each case; on shared cores it moves tokens/s.

The trl variant keeps TRL's defaults (SFTTrainer / DPOTrainer: bf16 on, gradient checkpointing
on, the checkpoint's dtype, loss on every token; the LoRA and DPO rows get the same LoraConfig as
the recipe; `use_cpu` on CPU). The one addition is the token counter, which only counts.
`--out` writes a header (machine, GPU, library versions, whether causal_conv1d imports, the
command line) and the tables; `--json` the raw results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from domain.lists import RECIPES as ALL_RECIPES
from recipes.estimate import GPU_CLASSES, Method, ModelShape, flops_per_token, reference_forward_flops

RECIPES: tuple[str, ...] = ALL_RECIPES  # domain/lists.py; each case below builds its plain-TRL twin by hand
VARIANTS = ("trl", "before", "now")
SPEEDS = {"before": "reference", "now": "auto"}  # the recipe config's `speed` for each variant
LFM2_ATTENTION_LAYERS = (2, 5, 8, 10, 12, 14)  # of 16, in both LFM2-350M and LFM2-1.2B
DATASHEET_BF16_TFLOPS = next(g for g in GPU_CLASSES if g.name == "h100-80gb").bf16_tflops  # 989
ROOT = Path(__file__).resolve().parents[1]
FILLER = (
    "the review says the product arrived early and the battery lasts all day but the screen is dim "
    "and the price was good so the customer would buy it again from this shop next year"
).split()

# Chat row lengths: a log-normal, the usual fit for chat-turn lengths (right-skewed, a long tail).
# Source numbers (tokens, as published; LLaMA-family tokenizers):
# - LMSYS-Chat-1M (Zheng et al. 2023, arXiv 2309.11998, Table 1): 2.0 turns per conversation,
#   69.5 tokens per user prompt (std 143) and 214.5 per response: ~570 tokens per conversation.
# - UltraChat (Ding et al. 2023, arXiv 2305.14233, Table 1): 3.85 turns, 1,467 tokens per dialogue.
# Fitted between the two: mean ~900 tokens (about their geometric mean, sqrt(570 * 1467) = 914)
# with a coefficient of variation of 1 (LMSYS's prompts have 2): sigma^2 = ln(1 + cv^2) = ln 2,
# sigma = 0.833; median = mean / exp(sigma^2 / 2) = 900 / sqrt(2) = 636.
# Clipped to [32, 2048]: P(S > 2048) = P(z > ln(2048 / 636) / 0.833 = 1.40) = 8 %, P(S < 32) < 0.1 %;
# the median stays 636, the clipped mean is ~850.
CHAT_MEDIAN_TOKENS = 636.0
CHAT_SIGMA = math.sqrt(math.log(2.0))
MIN_ROW_TOKENS = 32
ROW_MARGIN = 3  # rows made per (step x batch): a packing fast path may draw ~2048 / 636 rows per sequence


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


# ---- model --------------------------------------------------------------------------------------


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


# ---- row lengths and rows -----------------------------------------------------------------------


def chat_lengths(n: int, seq_len: int, seed: int) -> list[int]:
    """n row lengths (tokens) from the chat log-normal, clipped to [MIN_ROW_TOKENS, seq_len].
    Python's own Random: the same lengths for a seed on every machine and numpy version."""
    rng = random.Random(seed)
    mu = math.log(CHAT_MEDIAN_TOKENS)
    low = min(MIN_ROW_TOKENS, seq_len)
    return [min(seq_len, max(low, round(rng.lognormvariate(mu, CHAT_SIGMA)))) for _ in range(n)]


def row_lengths(mode: str, n: int, seq_len: int, seed: int) -> list[int]:
    return chat_lengths(n, seq_len, seed) if mode == "chat" else [seq_len] * n


def rows_needed(steps: int, batch_size: int) -> int:
    return steps * batch_size * ROW_MARGIN


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


def fit_conversation(tok: Any, target: int, row: int) -> list[dict[str, str]]:
    """Row `row` with the most user words whose rendered conversation fits in `target` tokens
    (binary search; fitted per row, since each row's words tokenize a little differently). A
    target below the template's own overhead gets the one-word row."""
    lo, hi = 1, 4 * target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if rendered_length(tok, conversation(mid, row)) <= target else (lo, mid - 1)
    return conversation(lo, row)


def sft_row(conv: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": conv}


def preference_row(conv: list[dict[str, str]], row: int) -> dict[str, Any]:
    """TRL's conversational preference row: prompt + chosen is the fitted conversation; the rejected
    answer has as many words (other ones), so prompt + rejected is about as long, at most truncated
    by the trainer's max_length."""
    user, answer = conv
    rejected = {"role": "assistant", "content": filler(len(answer["content"].split()), row + 11)}
    return {"prompt": [user], "chosen": [answer], "rejected": [rejected]}


def length_stats(lengths: list[int]) -> dict[str, float]:
    """Rendered row lengths: mean, median, p90, max, and the token-weighted mean sum(S^2) / sum(S)
    that the attention FLOPs per token take (see the module docstring)."""
    ordered = sorted(lengths)
    return {
        "rows": len(lengths),
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
        "attn_seq": sum(s * s for s in lengths) / sum(lengths),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_data(out_dir: Path, lengths: list[int]) -> dict[str, Any]:
    """The run's rows, once for every case: sft.jsonl and dpo.jsonl, and the rendered lengths' stats."""
    tok = bench_tokenizer()
    convs = [fit_conversation(tok, target, i) for i, target in enumerate(lengths)]
    rendered = [rendered_length(tok, c) for c in convs]
    return {
        "sft": str(write_jsonl(out_dir / "sft.jsonl", [sft_row(c) for c in convs])),
        "dpo": str(write_jsonl(out_dir / "dpo.jsonl", [preference_row(c, i) for i, c in enumerate(convs)])),
        "lengths": length_stats(rendered),
    }


# ---- measurement (inside a case's own process) ----------------------------------------------------


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
    variant: str  # "trl", "before" or "now"
    model_dir: str
    train_file: str  # the run's sft.jsonl or dpo.jsonl
    steps: int
    warmup: int
    batch_size: int
    seq_len: int
    device: str
    threads: int | None


def hide_cuda(device: str) -> None:
    # Before CUDA is initialized in this process: the recipes pick CUDA whenever they can see it.
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def speed_kwargs(config_cls: Any, variant: str) -> dict[str, Any]:
    """{"speed": ...} for before / now when the recipe's config has that field, else nothing (a
    recipe from before the field existed runs as it is)."""
    if variant in SPEEDS and "speed" in getattr(config_cls, "model_fields", {}):
        return {"speed": SPEEDS[variant]}
    return {}


def recipe_config(case: Case, out_dir: Path) -> tuple[Any, Any]:
    """The recipe's own config (speed per the variant) and train function, on the run's rows and
    fixed batch / steps."""
    from domain.job_config import Hyperparameters

    common: dict[str, Any] = {
        "base_model_dir": Path(case.model_dir),
        "train_file": Path(case.train_file),
        "output_dir": out_dir / "run",
        "hyperparameters": Hyperparameters(n_epochs=1, batch_size=case.batch_size),
        "max_length": case.seq_len,
        "max_steps": case.steps,
        "save_steps": 1_000_000,  # no checkpoint inside the timed steps
        "resume": False,
    }
    if case.recipe == "dpo":
        from recipes.dpo import DPORecipeConfig, train

        return DPORecipeConfig(**common, **speed_kwargs(DPORecipeConfig, case.variant)), train
    if case.recipe == "full_sft":
        from recipes.full_sft import FullSFTConfig
        from recipes.full_sft import train as full_train

        return FullSFTConfig(**common, **speed_kwargs(FullSFTConfig, case.variant)), full_train
    from recipes.lora_sft import LoraSFTConfig
    from recipes.lora_sft import train as lora_train

    return LoraSFTConfig(**common, **speed_kwargs(LoraSFTConfig, case.variant)), lora_train


def speed_plan(result: Any) -> dict[str, Any] | None:
    """What the recipe chose, when its result reports it (TrainResult.speed_plan, a SpeedPlan model
    or a dict; DPOResult wraps the TrainResult); None for a recipe that does not."""
    for holder in (result, getattr(result, "training", None)):
        plan = getattr(holder, "speed_plan", None)
        if plan is not None:
            return plan.model_dump() if hasattr(plan, "model_dump") else dict(plan)
    return None


def run_recipe(case: Case, out_dir: Path, clock: StepClock) -> dict[str, Any]:
    """The recipe's own train(): its trainable parameter count, the speed asked, the plan it chose."""
    cfg, train = recipe_config(case, out_dir)
    result = train(cfg, callbacks=[clock])
    training = getattr(result, "training", result)  # DPOResult wraps the common TrainResult
    return {
        "trainable": int(training.trainable_params),
        "speed": getattr(cfg, "speed", None),  # None: the recipe has no speed field yet
        "speed_plan": speed_plan(result),
    }


def run_trl_defaults(case: Case, out_dir: Path, clock: StepClock) -> dict[str, Any]:
    """Plain TRL on the same model, rows, batch size, max length and steps; TRL's defaults otherwise."""
    from datasets import Dataset
    from peft import LoraConfig

    from domain.job_config import LoraSettings
    from recipes.base_models import LFM2_LORA_TARGETS
    from recipes.training_common import parameter_counts

    tok = bench_tokenizer()
    lora = LoraSettings()  # the recipe's defaults: r 8, alpha 16, dropout 0.05, LFM2's targets
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(LFM2_LORA_TARGETS)
    )
    shared: dict[str, Any] = {
        "output_dir": str(out_dir / "trl"),
        "max_steps": case.steps,
        "per_device_train_batch_size": case.batch_size,
        "max_length": case.seq_len,
        "save_strategy": "no",
        "report_to": "none",
        "include_num_input_tokens_seen": "non_padding",  # counts tokens, changes nothing else
        "use_cpu": case.device == "cpu",  # TRL's bf16 default refuses a CPU it is not told to use
    }
    rows = Dataset.from_list(read_jsonl(Path(case.train_file)))
    if case.recipe == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer: Any = DPOTrainer(
            model=case.model_dir,
            args=DPOConfig(**shared),
            train_dataset=rows,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[clock],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=case.model_dir,
            args=SFTConfig(**shared),
            train_dataset=rows,
            processing_class=tok,
            peft_config=peft_config if case.recipe == "lora_sft" else None,
            callbacks=[clock],
        )
    trainer.train()
    return {"trainable": parameter_counts(trainer.model)[0], "speed": None, "speed_plan": None}


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
        run = run_trl_defaults if case.variant == "trl" else run_recipe
        ran = run(case, Path(tmp), clock)
    if len(clock.marks) <= case.warmup:
        raise RuntimeError(f"only {len(clock.marks)} steps ran, none after the {case.warmup} warm-up steps")
    (t0, tok0), (t1, tok1) = clock.marks[case.warmup - 1], clock.marks[-1]
    return {
        **asdict(case),
        **ran,
        "timed_steps": len(clock.marks) - case.warmup,
        "tokens": tok1 - tok0,
        "seconds": t1 - t0,
        "peak_bytes": clock.peak_bytes - baseline,
        "threads_used": torch.get_num_threads(),
        "load": os.getloadavg()[0],
    }


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`: an OOM's first line names the allocation, the rest is advice."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()[:300]


def case_child(case_path: Path) -> None:
    """Entry of a case's own process (`--run-case`): measure, and write the result or the error
    beside the case file, for the parent to read."""
    case = Case(**json.loads(case_path.read_text()))
    try:
        result = measure_case(case)
    except Exception as exc:  # the parent reports it as the case's row
        result = {**asdict(case), "error": first_line(exc)}
    result_path(case_path).write_text(json.dumps(result))


def result_path(case_path: Path) -> Path:
    return case_path.with_suffix(".result.json")


# ---- running cases in fresh processes ----------------------------------------------------------


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def run_child(command: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> int | None:
    """Run command in a session of its own, output to log; its exit status, or None when it ran past
    timeout_s and was killed with every process it started (dataloader workers, dataset map)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session's group: the child and all it started
            proc.wait()
            return None


def run_case(case: Case, work_dir: Path, timeout_s: float, name: str) -> dict[str, Any]:
    """The case in a fresh interpreter (`python -m bench.recipes_throughput --run-case`). A failure
    becomes a row naming it: one case that breaks (out of memory, say) or hangs does not cost the
    other rows of a GPU session."""
    case_path = work_dir / f"{name}.case.json"
    case_path.write_text(json.dumps(asdict(case)))
    log = work_dir / f"{name}.log"
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if case.device == "cpu" else {})}
    command = [sys.executable, "-m", "bench.recipes_throughput", "--run-case", str(case_path)]
    status = run_child(command, log, timeout_s, env)
    if status is None:
        return {**asdict(case), "error": f"timeout: killed after {timeout_s:.0f} s"}
    done = result_path(case_path)
    if done.exists():
        result: dict[str, Any] = json.loads(done.read_text())
        return result
    # died without writing (killed for memory, a crash in native code): its exit status and last words
    return {**asdict(case), "error": f"exit {status}: {last_line(log)}"}


def print_log_tail(log: Path, n: int = 15) -> None:
    """A failed case's last log lines, to stderr: the row has the error's first line only."""
    if log.exists():
        tail = log.read_text(errors="replace").splitlines()[-n:]
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr, flush=True)  # noqa: T201


def in_fresh_process(fn: Any, *args: Any) -> Any:
    """fn(*args) in a new interpreter (model writing, the device probe): nothing cached from earlier."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


# ---- the device: a measured matmul, the GPU, the kernel ----------------------------------------


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


def cuda_matmul_flops(n: int = 8192, warmup: int = 5, repeats: int = 7, inner: int = 10) -> float:
    """Median bf16 FLOP/s of n x n x n matmuls (2 n^3 FLOPs each; 1.1 TFLOP at n = 8192, ~1.4 ms on
    an H200): `inner` back-to-back per CUDA-event timing, so launch gaps do not count, median of
    `repeats` timings after `warmup` calls (cuBLAS picks its kernel and the clocks ramp up)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    seconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            torch.matmul(a, b)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1000 / inner)  # elapsed_time is in ms
    return 2 * n**3 / statistics.median(seconds)


def kernel_status() -> str:
    """Whether causal_conv1d imports here (transformers' LFM2 then takes its fast short-conv path)."""
    try:
        import causal_conv1d  # noqa: F401
    except Exception as exc:  # ImportError, or a build that does not match this torch
        return f"no ({first_line(exc)})"
    try:
        return f"yes ({version('causal-conv1d')})"
    except PackageNotFoundError:
        return "yes"


def probe_device(device: str, threads: int | None) -> dict[str, Any]:
    """In a fresh process: the measured matmul peak, the GPU's name and memory, the kernel."""
    hide_cuda(device)
    import torch

    if device == "cpu":
        return {"matmul_flops": cpu_matmul_flops(threads), "matmul": "fp32 2048^3, best of 5", "gpu": None,
                "causal_conv1d": kernel_status()}  # fmt: skip
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    props = torch.cuda.get_device_properties(0)
    return {
        "matmul_flops": cuda_matmul_flops(),
        "matmul": "bf16 8192^3 torch.matmul, median of 7 x 10 after 5 warm-up",
        "gpu": f"{props.name}, {props.total_memory / 1024**3:.0f} GiB, CUDA {torch.version.cuda}",
        "causal_conv1d": kernel_status(),
    }


# ---- FLOPs, summaries and the tables ------------------------------------------------------------


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


def summarize(
    result: dict[str, Any], shape: ModelShape, peak_flops: float, measured_flops: float | None = None
) -> dict[str, Any]:
    """tokens/s, FLOPs and MFU of one case, against the datasheet peak and the measured matmul.
    S for the attention term: the rows' token-weighted mean length when the run knows it
    (`attn_seq`), else tokens per sequence (fixed rows, batch_size sequences a step)."""
    seqs = result["timed_steps"] * sequences_per_step(result["recipe"], result["batch_size"])
    mean_seq = result.get("attn_seq") or result["tokens"] / seqs
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
        "mfu_measured_pct": 100 * achieved / measured_flops if measured_flops else None,
    }


def add_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`now` rows get tokens/s over `trl` and over `before` of the same shape and recipe."""
    rate = {(r["shape"], r["recipe"], r["variant"]): r.get("tokens_per_s") for r in rows}
    out = []
    for r in rows:
        extra: dict[str, Any] = {}
        if r["variant"] == "now" and r.get("tokens_per_s"):
            for other in ("trl", "before"):
                base = rate.get((r["shape"], r["recipe"], other))
                extra[f"vs_{other}"] = r["tokens_per_s"] / base if base else None
        out.append({**r, **extra})
    return out


def fmt_bytes(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def fmt_pct(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.1f}%" if x >= 0.1 else f"{x:.2g}%"  # a tiny CPU rate against 989 TFLOP/s stays visible


def fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else ""


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:.0f}"


# The plan's keys the settings column shows, in this order (others follow; lists such as the
# plan's reasons stay in --json only).
SETTINGS_KEYS = (
    "fast", "padding_free", "length_grouped", "micro_batch_size", "grad_accum", "activation_checkpointing",
    "fused_optimizer", "dataloader_workers", "conv_kernel", "varlen_attention", "estimated_peak_gib",
)  # fmt: skip
SETTINGS_HIDDEN = ("mode", "device", "reasons")  # the variant and the run's header already say these


def fmt_settings(r: dict[str, Any]) -> str:
    """The settings column: what `now` chose, from the recipe's speed_plan."""
    if r["variant"] != "now" or "error" in r:
        return ""
    if r.get("speed") is None:
        return "recipe has no speed field: same as before"
    plan = r.get("speed_plan")
    if not plan:
        return f"speed={r['speed']} (no speed_plan reported)"
    keys = [k for k in SETTINGS_KEYS if k in plan] + [k for k in plan if k not in SETTINGS_KEYS]
    shown = [k for k in keys if k not in SETTINGS_HIDDEN and not isinstance(plan[k], list | dict)]
    return ", ".join(f"{k}={plan[k]}" for k in shown)


def main_row(r: dict[str, Any]) -> str:
    if "error" in r:
        error = str(r["error"]).replace("|", "/")
        return f"| {r['shape']} | {r['recipe']} | {r['variant']} | failed: {error} | | | | | | |"
    return (
        f"| {r['shape']} | {r['recipe']} | {r['variant']} | {fmt_rate(r['tokens_per_s'])} "
        f"| {fmt_pct(r['mfu_pct'])} | {fmt_pct(r.get('mfu_measured_pct'))} | {fmt_bytes(r['peak_bytes'])} "
        f"| {fmt_ratio(r.get('vs_trl'))} | {fmt_ratio(r.get('vs_before'))} | {fmt_settings(r)} |"
    )


def main_table(rows: list[dict[str, Any]], peak_tflops: float) -> str:
    """One row per case, side by side: tokens/s, both MFUs, peak memory, now's speed-ups and settings."""
    head = (
        f"| shape | recipe | variant | tokens/s | MFU ({peak_tflops:.0f} TFLOP/s) | MFU (measured matmul) "
        "| peak mem | now / trl | now / before | settings chosen |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    return head + "\n".join(main_row(r) for r in rows)


def details_table(rows: list[dict[str, Any]]) -> str:
    """The figures behind each measured row."""
    head = (
        "| shape | recipe | variant | params (trainable) | steps timed | attention S | tokens | s "
        "| GFLOP/token | achieved TFLOP/s | load |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {r['shape']} | {r['recipe']} | {r['variant']} | {r['params'] / 1e6:.1f}M "
        f"({r['trainable'] / 1e6:.2f}M) | {r['timed_steps']} | {r['mean_seq']:.0f} | {r['tokens']} "
        f"| {r['seconds']:.2f} | {r['gflop_per_token']:.3g} | {r['achieved_tflops']:.3g} | {r['load']:.1f} |"
        for r in rows
        if "error" not in r and "tokens_per_s" in r
    ]
    return head + "\n".join(lines)


def report(header: str, rows: list[dict[str, Any]], peak_tflops: float) -> str:
    return f"{header}\n\n{main_table(rows, peak_tflops)}\n\n{details_table(rows)}\n"


# ---- the run's header ---------------------------------------------------------------------------


def library_versions() -> str:
    found = []
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not found)")
    return ", ".join(found)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else platform.processor()


def header(
    args: argparse.Namespace, device: dict[str, Any], data: dict[str, Any], peaks: dict[str, float]
) -> str:
    """Machine, GPU, versions, kernel, command, peaks and rows: what a reader needs to rerun it."""
    lengths = data["lengths"]
    command = shlex.join(["python", "-m", "bench.recipes_throughput", *sys.argv[1:]])
    return "\n".join(
        [
            f"- machine: {platform.node()}, {os.cpu_count()} cores {cpu_name()}, "
            f"Python {platform.python_version()}",
            f"- device: {args.device}; GPU: {device.get('gpu') or 'none'}",
            f"- libraries: {library_versions()}",
            f"- causal_conv1d: {device.get('causal_conv1d')}",
            f"- command: `{command}`",
            f"- peaks: datasheet {peaks['datasheet'] / 1e12:.4g} TFLOP/s; measured matmul "
            f"{peaks['measured'] / 1e12:.4g} TFLOP/s ({device.get('matmul')})",
            f"- rows ({args.lengths}, seed {args.seed}): {lengths['rows']} rows, rendered tokens mean "
            f"{lengths['mean']:.0f}, median {lengths['median']:.0f}, p90 {lengths['p90']}, "
            f"max {lengths['max']}; "
            f"attention S (sum S^2 / sum S) {lengths['attn_seq']:.0f}",
            f"- steps {args.steps} ({args.warmup} warm-up), batch {args.batch_size}, "
            f"max length {args.seq_len}",
        ]
    )


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="tiny", help=f"comma-separated: {', '.join(SHAPES)}")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {', '.join(RECIPES)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--lengths", choices=("chat", "fixed"), default="chat", help="row lengths (see above)")
    p.add_argument("--seed", type=int, default=0, help="seed of the chat row lengths")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=4, help="rows (DPO: pairs) per step")
    p.add_argument("--seq-len", type=int, default=2048, help="max tokens per row (max_length)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--peak-tflops", type=float, default=DATASHEET_BF16_TFLOPS, help="datasheet peak for MFU")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument(
        "--trl-defaults", action="store_true", help="(old command lines; trl is a default variant)"
    )
    p.add_argument("--out", type=Path, help="write the header and tables here (markdown)")
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--case-timeout", type=float, default=300, help="seconds before a case is killed")
    p.add_argument("--budget-s", type=float, help="start no new case after this many seconds of the run")
    p.add_argument("--logs-dir", type=Path, help="keep each case's log here (default: discarded)")
    p.add_argument("--run-case", type=Path, help=argparse.SUPPRESS)  # a case's own process
    args = p.parse_args(argv)
    if args.run_case:
        return args
    chosen = set(args.shapes.split(",")), set(args.recipes.split(",")), set(args.variants.split(","))
    unknown = (chosen[0] - set(SHAPES)) | (chosen[1] - set(RECIPES)) | (chosen[2] - set(VARIANTS))
    if unknown:
        p.error(f"unknown shape, recipe or variant: {', '.join(sorted(unknown))}")
    if args.steps <= args.warmup or args.warmup < 1:
        p.error("need --warmup >= 1 and --steps > --warmup")
    return args


def write_outputs(
    args: argparse.Namespace, head: str, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    if args.out:
        args.out.write_text(report(head, rows, args.peak_tflops))
    if args.json:
        args.json.write_text(json.dumps({**meta, "results": rows}, indent=1, default=str))


def summarize_all(
    results: list[dict[str, Any]], shapes: dict[str, ModelShape], peaks: dict[str, float]
) -> list:
    rows = [
        r if "error" in r else summarize(r, shapes[r["shape"]], peaks["datasheet"], peaks["measured"])
        for r in results
    ]
    return add_speedups(rows)


def skipped(case: Case, why: str) -> dict[str, Any]:
    return {**asdict(case), "error": f"skipped: {why}"}


def main() -> None:
    args = parse_args()
    if args.run_case:
        case_child(args.run_case)
        return
    started = time.monotonic()
    shape_names, recipes = args.shapes.split(","), args.recipes.split(",")
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    device = in_fresh_process(probe_device, args.device, args.threads)
    peaks = {"datasheet": args.peak_tflops * 1e12, "measured": device["matmul_flops"]}
    results: list[dict[str, Any]] = []
    shapes: dict[str, ModelShape] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        lengths = row_lengths(args.lengths, rows_needed(args.steps, args.batch_size), args.seq_len, args.seed)
        data = write_data(tmp, lengths)
        head = header(args, device, data, peaks)
        meta = {"device": device, "rows": data["lengths"], "command": sys.argv, "args": vars(args)}
        print(head, flush=True)  # noqa: T201
        logs = args.logs_dir or tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for shape_name in shape_names:
            model_dir = tmp / shape_name
            built = in_fresh_process(write_model, shape_name, str(model_dir))
            shapes[shape_name] = ModelShape.from_config(built["config"], built["params"])
            for recipe in recipes:
                train_file = data["dpo"] if recipe == "dpo" else data["sft"]
                for variant in variants:
                    case = Case(
                        shape_name, recipe, variant, str(model_dir), train_file, args.steps, args.warmup,
                        args.batch_size, args.seq_len, args.device, args.threads,
                    )  # fmt: skip
                    over = args.budget_s and time.monotonic() - started > args.budget_s
                    name = f"{shape_name}-{recipe}-{variant}"
                    result = (
                        skipped(case, "over --budget-s")
                        if over
                        else run_case(case, logs, args.case_timeout, name)
                    )
                    result.update(params=built["params"], attn_seq=data["lengths"]["attn_seq"])
                    results.append(result)
                    print(json.dumps(result, default=str), flush=True)  # noqa: T201
                    if "error" in result and not over:
                        print_log_tail(logs / f"{name}.log")
                    write_outputs(args, head, summarize_all(results, shapes, peaks), meta)
            shutil.rmtree(model_dir, ignore_errors=True)  # the next shape's model needs the disk
        if args.device == "cpu":  # the cores' load moves the CPU figure: the better of before and after
            peaks["measured"] = max(peaks["measured"], in_fresh_process(cpu_matmul_flops, args.threads))
            head = header(args, device, data, peaks)
    rows = summarize_all(results, shapes, peaks)
    write_outputs(args, head, rows, meta)
    print("\n" + report(head, rows, args.peak_tflops), flush=True)  # noqa: T201
    print(f"wall {time.monotonic() - started:.0f} s", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
