"""Generate answers for held-out chat rows with transformers or llama.cpp, and score them.

Every runner decodes greedily. On the CPU each answers one row at a time: eval sets are small, and
unbatched generation avoids padding effects, so the HF and GGUF scores of one model differ only by
the runtime and the quantization. The HF runner on a GPU (`device="cuda"`, which only the evaluate
stage's own process asks for, worker/eval_process.py) loads the checkpoint in bf16 and decodes
rows in left-padded batches with the same prompts, budget of new tokens and stopping, so its
scores mean the same; batching itself changes no token (tests/eval/test_hf_batches.py checks
batched against one-at-a-time in fp32). The GGUF runner formats prompts with the chat template
embedded in the file, exactly as a customer's llama.cpp will.

Rows are chat rows with tool calls already written as LFM text in the assistant content (what
`recipes.chat_data.load_rows` returns).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from domain.lists import EVAL_TASKS
from eval.gguf_chat import gguf_formatter, tokenize_gguf
from eval.metrics import EvalResult, TaskType, score
from eval.runtime_stats import RuntimeStats, default_threads, measure_peak_memory

Row = dict[str, Any]

# The checkpoint generate_hf loaded last, kept only inside `one_load_per_model()`: a worker
# process runs many jobs, so a model must not outlive the stage that loaded it.
_kept: dict[tuple[Path, str], tuple[Any, Any]] | None = None

Device = Literal["cpu", "cuda"]

# Batched decoding on a GPU: rows sorted by prompt length, at most this many per batch and this
# many padded tokens (prompt + new) per batch. A 40-row eval or the 64-item probe is two or three
# batches; LFM2-1.2B's cache for 16k tokens is a few hundred MB.
GPU_BATCH_ROWS = 32
GPU_BATCH_TOKENS = 16384


@contextlib.contextmanager
def one_load_per_model() -> Iterator[None]:
    """Within the block, consecutive generate_hf calls on the same checkpoint (the task eval, then
    the probe) share one load; one model at a time is kept, so memory stays as without it."""
    global _kept
    _kept = {}
    try:
        yield
    finally:
        _kept = None


def _load_hf(model_dir: Path, device: Device = "cpu") -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _kept is not None and (model_dir, device) in _kept:
        return _kept[(model_dir, device)]
    if _kept is not None:
        _kept.clear()  # the previous model goes before this one loads
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if device == "cuda":
        # bf16 on the GPU: the dtype GPU training saved, and the speed the evaluate stage needs
        loaded: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        model = loaded.to("cuda").eval()
    else:
        # fp32 whatever the checkpoint's dtype: transformers otherwise computes in the saved dtype
        # (bf16 for real bases and GPU-merged models), and SmolLM2's bf16 greedy answers part from
        # its F16 GGUF's at the 1st token on one parity golden and the 18th on another (tests/
        # export/test_parity.py), so HF and GGUF scores would differ by more than runtime and
        # quantization.
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if _kept is not None:
        _kept[(model_dir, device)] = (tokenizer, model)
    return tokenizer, model


def prompts_and_references(rows: list[Row]) -> tuple[list[Row], list[str]]:
    """Split each row at its last assistant turn.

    Returns:
        prompts: rows holding the messages before that turn (and the row's `tools`, if any).
        references: that turn's content.
    """
    prompts, references = [], []
    for i, row in enumerate(rows):
        messages = row["messages"]
        last = max((j for j, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise ValueError(f"row {i}: needs an assistant turn after at least one other message")
        if messages[last].get("tool_calls") and not messages[last].get("content"):
            raise ValueError(
                f"row {i}: tool_calls must be rendered as LFM text first (recipes.chat_data.normalize_row)"
            )
        prompt: Row = {"messages": messages[:last]}
        if row.get("tools"):
            prompt["tools"] = row["tools"]
        prompts.append(prompt)
        references.append(messages[last].get("content") or "")
    return prompts, references


def generate_hf(
    model_dir: Path,
    rows: list[Row],
    max_new_tokens: int = 16,
    *,
    device: Device = "cpu",
    batch_size: int | None = None,
) -> list[str]:
    """Greedy answers from a transformers checkpoint, one per row (only the new tokens, decoded
    without special tokens). The tokenizer's own chat template renders the prompt; transformers
    understands `{% generation %}` markers, so training templates work unchanged.

    Args:
        device: "cpu" (fp32) or "cuda" (bf16 on the GPU; call it only in a process that may hold
            CUDA, never in the Celery worker).
        batch_size: rows per `generate` call. Default: 1 on the CPU (the answers every CPU score
            was made with), batches of up to `GPU_BATCH_ROWS` rows and `GPU_BATCH_TOKENS` tokens
            on CUDA. Above 1, prompts are left-padded; the tokens are the same as one at a time.
    """
    tokenizer, model = _load_hf(model_dir, device)
    return generate_loaded(tokenizer, model, rows, max_new_tokens, device=device, batch_size=batch_size)


def generate_loaded(
    tokenizer: Any,
    model: Any,
    rows: list[Row],
    max_new_tokens: int = 16,
    *,
    device: Device = "cpu",
    batch_size: int | None = None,
) -> list[str]:
    """`generate_hf` with a model already in memory (the one being trained: eval/in_training.py)."""
    import torch
    from transformers import GenerationConfig

    # An explicit config: a checkpoint's generation_config.json may ask for sampling.
    gen_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    prompts, _ = prompts_and_references(rows)
    if device == "cpu" and (batch_size or 1) == 1:
        outputs = []
        with torch.inference_mode():
            for prompt in prompts:
                inputs = _prompt_inputs(tokenizer, prompt)
                generated = model.generate(**inputs, generation_config=gen_config)
                new_tokens = generated[0, inputs["input_ids"].shape[1] :]
                outputs.append(str(tokenizer.decode(new_tokens, skip_special_tokens=True)))
        return outputs
    return _generate_hf_batched(tokenizer, model, gen_config, prompts, device, batch_size)


def _prompt_inputs(tokenizer: Any, prompt: Row) -> Any:
    """The prompt rendered with the chat template and the generation prompt, as tensors."""
    return tokenizer.apply_chat_template(
        prompt["messages"],
        tools=prompt.get("tools"),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )


def _prompt_ids(tokenizer: Any, prompt: Row) -> list[int]:
    """The prompt's token ids exactly as the one-at-a-time path renders them."""
    return [int(t) for t in _prompt_inputs(tokenizer, prompt)["input_ids"][0]]


def _batches(lengths: list[int], max_new_tokens: int, batch_size: int | None) -> list[list[int]]:
    """Row indices in batches, longest prompts first (little padding within a batch): at most
    `batch_size` rows each when given, else at most GPU_BATCH_ROWS rows and GPU_BATCH_TOKENS
    padded tokens (a row longer than that goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            rows = len(last) + 1
            # the batch's first row is its longest: every row is padded to it
            padded = rows * (lengths[last[0]] + max_new_tokens)
            if batch_size:
                fits = rows <= batch_size
            else:
                fits = rows <= GPU_BATCH_ROWS and padded <= GPU_BATCH_TOKENS
            if fits:
                last.append(i)
                continue
        batches.append([i])
    return batches


def _generate_hf_batched(
    tokenizer: Any, model: Any, gen_config: Any, prompts: list[Row], device: Device, batch_size: int | None
) -> list[str]:
    """Greedy decoding of left-padded batches with an attention mask. A row that ends (an end
    token) while others go on is filled with the pad token after it; its answer is cut after its
    first end token, which is where one-at-a-time generation stops, so both give the same tokens."""
    import torch

    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    eos = gen_config.eos_token_id
    stop = set(eos) if isinstance(eos, list) else {eos}
    pad_id = int(gen_config.pad_token_id)
    outputs: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for batch in _batches([len(x) for x in ids], gen_config.max_new_tokens, batch_size):
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(ids[i]) :] = torch.tensor(ids[i], dtype=torch.long)
                attention_mask[row, width - len(ids[i]) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=gen_config,
            )
            for row, i in enumerate(batch):
                new_tokens = [int(t) for t in generated[row, width:].tolist()]
                end = next((k for k, t in enumerate(new_tokens) if t in stop), None)
                if end is not None:
                    new_tokens = new_tokens[: end + 1]
                outputs[i] = str(tokenizer.decode(new_tokens, skip_special_tokens=True))
    return outputs


def generate_gguf(
    gguf_path: Path,
    rows: list[Row],
    n_ctx: int = 2048,
    max_new_tokens: int = 16,
    n_threads: int | None = None,
    stats: RuntimeStats | None = None,
    grammar: str | None = None,
) -> list[str]:
    """Greedy answers from a GGUF through llama.cpp's chat completion, one per row.

    `n_threads` defaults to `default_threads()`.
    `stats`, when given, receives the memory the load and the answers took and the decode speed
    of a fixed run after them (`SPEED_TOKENS`, see `_speed_run_gguf`; never constrained).
    `grammar`, when given, is GBNF text (eval.grammar.grammar_for) every answer is sampled under,
    as on a device that passes the artifact's grammar file to llama.cpp.

    Raises:
        ValueError: `grammar` does not parse for this GGUF's vocabulary.
    """
    from llama_cpp import Llama

    n_threads = n_threads or default_threads()
    prompts, _ = prompts_and_references(rows)
    outputs = []
    with measure_peak_memory(stats):
        llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=n_threads, verbose=False, seed=0)
        with contextlib.closing(llm):
            formatter = gguf_formatter(llm)
            constraint = _gguf_grammar(llm, grammar, gguf_path) if grammar else None
            for prompt in prompts:
                outputs.append(_chat_gguf(llm, formatter, prompt, n_ctx, max_new_tokens, stats, constraint))
            if stats is not None:
                stats.context = n_ctx
                _speed_run_gguf(llm, stats)
    return outputs


def _gguf_grammar(llm: Any, grammar: str, gguf_path: Path) -> Any:
    """A LlamaGrammar of `grammar`, checked first: llama-cpp-python 0.3.36 hands a grammar to
    llama.cpp unchecked and segfaults on the NULL sampler it gets back for one that does not parse."""
    from llama_cpp import LlamaGrammar

    from eval.grammar import grammar_parses

    if not grammar_parses(llm, grammar):
        raise ValueError(
            f"the grammar does not parse for {gguf_path.name}'s vocabulary (llama.cpp logged why)"
        )
    return LlamaGrammar.from_string(grammar, verbose=False)


def _chat_gguf(
    llm: Any,
    formatter: Any,
    prompt: Row,
    n_ctx: int,
    max_new_tokens: int,
    stats: RuntimeStats | None,
    grammar: Any = None,
) -> str:
    """One greedy answer; "" for a prompt that with `max_new_tokens` does not fit the context, as a
    device configured to that context could not answer it either (counted in `stats.over_context`;
    llama-cpp-python itself fails such a prompt with an unrelated numpy error). `n_ctx` is the
    context asked for: llama.cpp pads its own up to a multiple of 256, llama-cpp-python's buffers
    are not. `formatter` is `eval.gguf_chat.gguf_formatter(llm)`, built once per model; `grammar`
    a LlamaGrammar or None (llama-cpp-python builds a fresh grammar sampler for each completion)."""
    rendered = formatter(messages=prompt["messages"], tools=prompt.get("tools")).prompt
    if len(tokenize_gguf(llm, rendered)) + max_new_tokens > n_ctx:
        if stats is not None:
            stats.over_context += 1
        return ""
    # create_chat_completion formats with the GGUF's tokenizer.chat_template when no chat_format is
    # given; temperature 0 is greedy
    result: Any = llm.create_chat_completion(
        messages=prompt["messages"],
        tools=prompt.get("tools"),
        temperature=0,
        max_tokens=max_new_tokens,
        grammar=grammar,
    )
    return result["choices"][0]["message"]["content"] or ""


# Decode speed is timed on a fixed run, not on the answers: a fine-tune that answers a label in one
# or two tokens (or stops at once) would otherwise give no figure, or one dominated by overhead.
# The run decodes SPEED_TOKENS tokens greedily after SPEED_PROMPT, ignoring end-of-turn tokens, so
# every artifact does the same work; only the single-token steps are timed, not the prompt.
SPEED_TOKENS = 32
SPEED_PROMPT = "Write a short story about a robot who learns to paint, in simple words."


def _speed_run_gguf(llm: Any, stats: RuntimeStats) -> None:
    tokens = llm.tokenize(SPEED_PROMPT.encode(), add_bos=True, special=False)
    steps = llm.generate(tokens, temp=0.0)  # greedy; yields token after token, end-of-turn included
    next(steps)  # the prompt's evaluation and the first token: not timed
    start = time.perf_counter()
    for _ in range(SPEED_TOKENS):
        next(steps)
    stats.decode_tokens += SPEED_TOKENS
    stats.decode_seconds += time.perf_counter() - start
    steps.close()


def _speed_run_onnx(decoder: Any, tokenizer: Any, stats: RuntimeStats) -> None:
    decoder.reset()
    token = int(decoder.step(tokenizer.encode(SPEED_PROMPT))[0, -1].argmax())
    start = time.perf_counter()
    for _ in range(SPEED_TOKENS):
        token = int(decoder.step([token])[0, -1].argmax())
    stats.longest_sequence = max(stats.longest_sequence, decoder.seen)
    stats.decode_tokens += SPEED_TOKENS
    stats.decode_seconds += time.perf_counter() - start


def generate_onnx(
    onnx_path: Path,
    rows: list[Row],
    max_new_tokens: int = 16,
    n_ctx: int | None = None,
    stats: RuntimeStats | None = None,
) -> list[str]:
    """Greedy answers from an exported LFM2 ONNX decoder in onnxruntime, one row at a time: the
    prompt is rendered by the artifact's own tokenizer and chat template (the files the browser
    gets), prefilled in one call, then decoded a token per call with the state fed back.
    A prompt that with `max_new_tokens` does not fit `n_ctx` (the device's context cap) gets "",
    as in the llama.cpp runner."""
    from transformers import AutoTokenizer

    from eval.onnx_decoder import decoder_session

    root = onnx_path.parent.parent  # <artifact>/onnx/model_q4.onnx
    tokenizer = AutoTokenizer.from_pretrained(root)
    prompts, _ = prompts_and_references(rows)
    outputs = []
    with measure_peak_memory(stats):
        decoder = decoder_session(onnx_path, threads=default_threads())
        stop = _stop_ids(decoder.config, tokenizer)
        for prompt in prompts:
            rendered: Any = tokenizer.apply_chat_template(
                prompt["messages"],
                tools=prompt.get("tools"),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            ids = [int(t) for t in rendered]
            if n_ctx and len(ids) + max_new_tokens > n_ctx:
                outputs.append("")
                if stats is not None:
                    stats.over_context += 1
                continue
            answer = _greedy(decoder, ids, max_new_tokens, stop)
            outputs.append(str(tokenizer.decode(answer, skip_special_tokens=True)))
            if stats is not None:
                stats.longest_sequence = max(stats.longest_sequence, decoder.seen)
        if stats is not None:
            stats.context = n_ctx
            _speed_run_onnx(decoder, tokenizer, stats)
    return outputs


def _stop_ids(config: Any, tokenizer: Any) -> set[int]:
    eos = getattr(config, "eos_token_id", None) or tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos}


def _greedy(decoder: Any, ids: list[int], max_new_tokens: int, stop: set[int]) -> list[int]:
    decoder.reset()
    token = int(decoder.step(ids)[0, -1].argmax())  # the prefill gives the first new token
    new: list[int] = []
    while token not in stop and len(new) < max_new_tokens:
        new.append(token)
        if len(new) < max_new_tokens:
            token = int(decoder.step([token])[0, -1].argmax())
    return new


# Each task type's answer budget (the why is beside the numbers, in domain/lists.py EVAL_TASKS).
MAX_NEW_TOKENS: dict[str, int] = {t: f.max_new_tokens for t, f in EVAL_TASKS.items()}


Kind = Literal["hf", "gguf", "onnx"]


def evaluate_model(
    kind: Kind,
    path: Path,
    rows: list[Row],
    task_type: TaskType,
    labels: list[str] | None = None,
    max_new_tokens: int | None = None,
    schema: dict[str, Any] | None = None,
    *,
    n_ctx: int | None = None,
    stats: RuntimeStats | None = None,
    device: Device = "cpu",
    grammar: str | None = None,
) -> EvalResult:
    """Generate for every held-out row and score against the rows' last assistant turns.

    Args:
        max_new_tokens (`int`, *optional*): defaults to `MAX_NEW_TOKENS[task_type]`.
        schema (`dict`, *optional*): extraction only: a JSON Schema the answers must satisfy.
        n_ctx (`int`, *optional*): artifacts only: the context to configure, the device's cap.
        stats (`RuntimeStats`, *optional*): artifacts only: filled with decode speed and memory.
        device (`str`, *optional*): "hf" only: "cuda" decodes in bf16 batches on the GPU.
        grammar (`str`, *optional*): "gguf" only: GBNF text (eval.grammar.grammar_for) every answer
            is sampled under; score an artifact with and without it to see what it buys. A
            ValueError for "hf" and "onnx", which cannot apply it.
    """
    _check_grammar_kind(kind, grammar)  # before a child process is spawned for nothing
    _, references = prompts_and_references(rows)
    max_new_tokens = max_new_tokens or MAX_NEW_TOKENS[task_type]
    if stats is not None and kind != "hf":
        predictions = generate_isolated(
            kind, path, rows, max_new_tokens, n_ctx=n_ctx, stats=stats, grammar=grammar
        )
    else:
        predictions = generate(kind, path, rows, max_new_tokens, n_ctx=n_ctx, device=device, grammar=grammar)
    return score(task_type, predictions, references, labels, schema)


def _generate_in_child(
    kind: str,
    path: str,
    rows: list[Row],
    max_new_tokens: int,
    n_ctx: int | None,
    runtime: str,
    grammar: str | None = None,
) -> tuple[list[str], dict[str, Any]]:
    stats = RuntimeStats(runtime=runtime)
    outputs = generate(kind, Path(path), rows, max_new_tokens, n_ctx=n_ctx, stats=stats, grammar=grammar)
    return outputs, asdict(stats)


class ArtifactRunError(RuntimeError):
    """The runtime scoring an artifact died or ran past its time."""


# Scoring an artifact takes seconds to minutes (a few dozen rows, short answers); an hour means the
# runtime hangs, and the job must fail rather than heartbeat forever.
ISOLATED_TIMEOUT_S = 3600.0


def generate_isolated(
    kind: str,
    path: Path,
    rows: list[Row],
    max_new_tokens: int,
    *,
    n_ctx: int | None = None,
    stats: RuntimeStats,
    timeout_s: float = ISOLATED_TIMEOUT_S,
    grammar: str | None = None,
) -> list[str]:
    """`generate` in a fresh process, filling `stats` there. A long-lived worker has freed memory
    (training's) that a runtime would reuse without its resident set growing, so a peak-RSS figure
    taken in the worker understates what the artifact needs; a new process has none, and a runtime
    that crashes or hangs takes down only itself. `grammar` as in `generate`.

    Raises:
        ArtifactRunError: the process died (e.g. killed for memory) or ran past `timeout_s`.
    """
    context = multiprocessing.get_context("spawn")  # no fork: the worker holds threads and a DB pool
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        job = pool.submit(
            _generate_in_child, kind, str(path), rows, max_new_tokens, n_ctx, stats.runtime, grammar
        )
        outputs, measured = job.result(timeout=timeout_s)
    except BrokenProcessPool:
        raise ArtifactRunError(
            f"{stats.runtime} died while scoring {path.name} (killed, e.g. out of memory, or crashed)"
        ) from None
    except FuturesTimeout:
        for child in set(multiprocessing.active_children()) - before:
            child.kill()
        raise ArtifactRunError(
            f"{stats.runtime} did not finish scoring {path.name} in {timeout_s:.0f} s"
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for name, value in measured.items():
        setattr(stats, name, value)
    return outputs


def generate(
    kind: str,
    path: Path,
    rows: list[dict[str, Any]],
    max_new_tokens: int,
    *,
    n_ctx: int | None = None,
    stats: RuntimeStats | None = None,
    device: Device = "cpu",
    grammar: str | None = None,
) -> list[str]:
    """Greedy answers from a transformers checkpoint ("hf", on `device`), a GGUF in llama.cpp
    ("gguf") or an LFM2 ONNX decoder in onnxruntime ("onnx").

    `grammar` (GBNF text) constrains the GGUF's answers. The other runtimes have no GBNF sampler
    (nor has transformers.js, which runs the ONNX artifact in browsers), so asking for one there
    is a ValueError rather than a score that looks constrained and is not.
    """
    _check_grammar_kind(kind, grammar)
    if kind == "hf":
        return generate_hf(path, rows, max_new_tokens=max_new_tokens, device=device)
    if kind == "gguf":
        return generate_gguf(
            path, rows, n_ctx=n_ctx or 2048, max_new_tokens=max_new_tokens, stats=stats, grammar=grammar
        )
    if kind == "onnx":
        return generate_onnx(path, rows, max_new_tokens=max_new_tokens, n_ctx=n_ctx, stats=stats)
    raise ValueError(f"kind must be 'hf', 'gguf' or 'onnx', not {kind!r}")


def _check_grammar_kind(kind: str, grammar: str | None) -> None:
    if grammar is not None and kind != "gguf":
        raise ValueError(f"a GBNF grammar applies to llama.cpp ('gguf') only, not {kind!r}")
