"""The pre-run plan of a job: real token counts, FLOPs, memory fit per GPU class, time and an
itemised quote. REST (`POST /v1/fine_tuning/jobs/plan`), job creation (the budget gate) and agent
tools all call `plan_job`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from domain.job_config import MAX_EVAL_ROWS, JobConfig, eval_quota, held_out_count, replay_count
from domain.lists import GPU_STAGES, GPUS_PER_JOB, METHODS, STAGES, sweep_size
from infra.models import Org
from infra.price_book import PriceBook, price_book
from infra.queue import queue_for
from infra.settings import get_settings
from recipes.token_count import TokenStats, count_tokens
from services import spend_budgets
from services.errors import InvalidRequest
from services.job_checks import check_job_config
from services.pools import queue_for_stage
from services.schemas.plans import (
    CostItemPublic,
    GpuFitPublic,
    OtherBasePublic,
    PlanPublic,
    QuotePublic,
    ResolvedHyperparametersPublic,
    SynthesisPlanPublic,
    TokenCounts,
)
from services.token_counts import file_token_stats

GB = 1e9


@dataclass
class _Data:
    stats: TokenStats  # sequences as training sees them (a DPO pair gives two)
    train_rows: int  # training rows (DPO: pairs)
    eval_rows: int
    exact: bool
    sequences_per_row: int = 1  # DPO trains on both answers of a pair


def _rows(session: Session, org: Org, cfg: JobConfig, model_dir: Path, max_length: int) -> _Data:
    if cfg.training_file:
        per = METHODS[cfg.method.type].sequences_per_row
        count = partial(
            file_token_stats, session=session, org=org, method=cfg.method.type, model=cfg.model,
            model_dir=model_dir, max_length=max_length,
        )  # fmt: skip
        stats = count(file_id=cfg.training_file, param="training_file")
        n_rows = stats.rows // per
        n_eval = held_out_count(n_rows, cfg.gate.min_eval_rows)
        if cfg.validation_file:
            n_eval = count(file_id=cfg.validation_file, param="validation_file").rows // per
        _enough_to_judge(cfg, n_eval, n_rows)
        n_train = n_rows - (0 if cfg.validation_file else n_eval)
        return _Data(stats, n_train, n_eval, True, per)
    assert cfg.task is not None  # check_job_config requires one of the two
    n_eval = eval_quota(cfg.task.num_examples, cfg.task.eval_fraction, cfg.gate.min_eval_rows)
    _enough_to_judge(cfg, n_eval, cfg.task.num_examples)
    stats = count_tokens(model_dir, [_typical_row(cfg)], max_length)
    return _Data(stats, cfg.task.num_examples - n_eval, n_eval, False)


def _synthesis(cfg: JobConfig, data: _Data) -> SynthesisPlanPublic | None:
    """The rows a task job asks for, its held-out share and the floor it must reach to train."""
    from synth.floor import floor
    from synth.generate import MAX_REQUESTS_PER_ROW, eval_targets_for, targets_for

    if cfg.task is None or cfg.training_file:
        return None
    targets = targets_for(cfg.task)
    return SynthesisPlanPublic(
        asked=cfg.task.num_examples,
        train_rows=data.train_rows,
        eval_rows=data.eval_rows,
        floor=floor(targets, eval_targets_for(targets, data.eval_rows), cfg.gate.min_eval_rows),
        max_requests=MAX_REQUESTS_PER_ROW * cfg.task.num_examples,
    )


def _enough_to_judge(cfg: JobConfig, n_eval: int, n_rows: int) -> None:
    """The held-out rows a job will have against the gate's min_eval_rows. Fewer, and the gate
    could only refuse, after the teacher and the GPU were paid for: a 400 now says what to change.
    Held out at most half of a file or of the rows asked for (infra/job_config)."""
    need = max(cfg.gate.min_eval_rows, 1)  # the gate scores something, even when told to take any count
    if n_eval >= need:
        return
    if cfg.training_file and cfg.validation_file:
        where, param = f"the validation file holds {n_eval} rows", "validation_file"
        fix = f"give a validation file of at least {need} rows"
    elif cfg.training_file:
        where, param = f"a {n_rows}-row file without a validation file holds out {n_eval}", "training_file"
        fix = f"give a validation file of at least {need} rows, or at least {2 * need} training rows"
    else:  # a task job: synthesis holds out its share of the rows asked for
        where, param = f"num_examples {n_rows} holds out {n_eval} rows", "task.num_examples"
        fix = f"ask for at least {2 * need} rows"
    raise InvalidRequest(
        f"{where}, fewer than the {need} the eval gate judges on (gate.min_eval_rows; the job would "
        f"train and then be refused): {fix}, or set a lower gate.min_eval_rows",
        param=param,
        code="too_few_eval_rows",
    )


def _typical_row(cfg: JobConfig) -> dict[str, Any]:
    """A row shaped like what synthesis writes for this task: the description as system prompt, a
    ~40-word input, and a label (classification) or a ~60-word answer."""
    assert cfg.task is not None
    answer = cfg.task.labels[0] if cfg.task.labels else " ".join(["answer"] * 60)
    return {
        "messages": [
            {"role": "system", "content": cfg.task.description},
            {"role": "user", "content": " ".join(["input"] * 40)},
            {"role": "assistant", "content": answer},
        ]
    }


def _base_dir(model_id: str, param: str = "model") -> tuple[Path, float]:
    from recipes.base_models import BaseModelUnavailable, find_base_model, resolve_base_model

    s = get_settings()
    try:
        path = resolve_base_model(model_id, s.models_dir, s.model_cache_dir)
    except BaseModelUnavailable as exc:
        raise InvalidRequest(str(exc), param=param, code="model_weights_missing") from None
    info = find_base_model(model_id, s.models_dir, s.model_cache_dir)
    assert info is not None
    return path, info.recommended_lr


def _trainable(model_dir: Path, cfg: JobConfig) -> tuple[int, int]:
    """Exact (trainable, total) parameters from the model built on the meta device (no weights),
    with the job's LoRA settings; a target that matches no Linear layer is a 400 here."""
    from recipes.training_common import count_lora_params

    try:
        return count_lora_params(model_dir, cfg.lora if cfg.training_type == "lora" else None)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="lora.target_modules", code="invalid_lora_targets") from None


def _flops(shape: Any, cfg: JobConfig, tokens: int, seq_len: int) -> float:
    from recipes.estimate import reference_forward_flops, training_flops

    flops = training_flops(shape, cfg.training_type, tokens, seq_len)
    if METHODS[cfg.method.type].reference_model:
        flops += reference_forward_flops(shape, tokens, seq_len)
    return flops


class _OtherBase(OtherBasePublic):
    shape: Any


def _other_base(cfg: JobConfig, model_id: str, tokens: int, seq_len: int) -> _OtherBase:
    """A sweep's other base, sized like the job's model: the same rows, epochs and steps (its own
    tokenizer may count a few tokens more or less; the job's count stands for it)."""
    from recipes.estimate import ModelShape

    param = next(
        f"targets[{i}].models[{t.models.index(model_id)}]"
        for i, t in enumerate(cfg.targets)
        if not isinstance(t, str) and t.models and model_id in t.models
    )
    model_dir, _ = _base_dir(model_id, param)
    try:
        trainable, total = _trainable(model_dir, cfg)
    except InvalidRequest as exc:  # the job's LoRA targets match nothing in this base
        raise InvalidRequest(f"{model_id}: {exc.message}", param=param, code=exc.code) from None
    shape = ModelShape.from_dir(model_dir)
    return _OtherBase(
        model=model_id, total_params=total, trainable_params=trainable,
        training_flops=_flops(shape, cfg, tokens, seq_len), shape=shape,
    )  # fmt: skip


def plan_job(*, session: Session, org: Org, config: JobConfig) -> PlanPublic:
    from recipes.estimate import ModelShape
    from recipes.lora_sft import LoraSFTConfig, resolve_hyperparameters
    from recipes.recipe_parts import base_learning_rate

    check_job_config(session, org, config)
    model_dir, catalog_lr = _base_dir(config.model)
    max_length = int(LoraSFTConfig.model_fields["max_length"].default)
    data = _rows(session, org, config, model_dir, max_length)
    stats = data.stats
    per_seq = stats.tokens / stats.rows
    # replay rows train beside the task's (recipes/replay.py), priced at the task rows' mean length
    trained_rows = data.train_rows + replay_count(data.train_rows, config.replay, config.method.type)
    tokens_per_epoch = round(per_seq * data.sequences_per_row * trained_rows)
    lr = base_learning_rate(config.method.type, config.training_type, catalog_lr)
    hp = resolve_hyperparameters(trained_rows, config.method.hyperparameters, lr)
    steps = hp.n_epochs * -(-trained_rows // hp.batch_size)
    trainable, total = _trainable(model_dir, config)
    shape = ModelShape.from_dir(model_dir)
    flops = _flops(shape, config, tokens_per_epoch * hp.n_epochs, round(per_seq))
    others = [
        _other_base(config, m, tokens_per_epoch * hp.n_epochs, round(per_seq)) for m in config.other_models
    ]
    other_sizes = {o.model: o.total_params for o in others}
    check_artifact_sizes(config, total, other_sizes)

    book = price_book()
    # the largest base of the job sets the memory it needs; the bases train one after another,
    # so the seconds are all of theirs
    sizes = [(total, shape, trainable), *((o.total_params, o.shape, o.trainable_params) for o in others)]
    biggest = max(sizes, key=lambda b: b[0])
    all_flops = flops + sum(o.training_flops for o in others)
    memory = _memory(
        biggest[1], config, (hp.batch_size, data.sequences_per_row), stats.longest, biggest[2],
        all_flops, steps * (1 + len(others)), book,
    )  # fmt: skip
    gpus_on = partial(_gpus_on, memory)
    seconds_on = partial(
        _stage_seconds, config, data, [flops, *(o.training_flops for o in others)], steps, book
    )
    compute, fits, no_fit = _route(
        config,
        memory,
        lambda c: (
            _quote(config, seconds_on(c, gpus_on(c)), data, total, book, c, gpus_on(c), other_sizes).total_usd
        ),
    )
    gpus = gpus_on(compute)
    seconds = seconds_on(compute, gpus)
    quote = _quote(config, seconds, data, total, book, compute, gpus, other_sizes)
    return PlanPublic(
        model=config.model,
        method=config.training_type,
        method_type=config.method.type,
        tokens=TokenCounts(
            train_rows=data.train_rows,
            eval_rows=data.eval_rows,
            train_tokens_per_epoch=tokens_per_epoch,
            mean_row_tokens=round(per_seq * data.sequences_per_row, 1),
            longest_row_tokens=stats.longest,
            truncated_rows=stats.truncated_rows if data.exact else 0,
            max_length=max_length,
            exact=data.exact,
            replay_rows=trained_rows - data.train_rows,
        ),
        hyperparameters=ResolvedHyperparametersPublic(**hp.model_dump(), steps=steps),
        total_params=total,
        trainable_params=trainable,
        training_flops=flops,
        other_models=[OtherBasePublic(**o.model_dump(exclude={"shape"})) for o in others],
        memory=memory,
        compute=compute,
        gpus=gpus,
        queue=queue_for(compute, gpus),
        fits=fits,
        no_fit_reason=no_fit,
        estimated_seconds=seconds,
        quote=quote,
        budget=spend_budgets.check(session=session, org=org, config=config, quote_usd=quote.total_usd),
        synthesis=_synthesis(config, data),
    )


# The size estimate (each format's estimate_bytes, export/formats/) is within about 15% of the files made
# (docs/benchmarks.md), so a target is refused before training only when its estimate is over the
# budget by more than this: a certain rejection at the gate after the customer paid for training.
SIZE_REFUSAL_MARGIN = 1.10


def check_artifact_sizes(cfg: JobConfig, params: int, others: dict[str, int] | None = None) -> None:
    """Refuse a target whose artifact would clearly be over its refused size budget: of the job's
    base (`params`), or for a sweep with other bases (`others`, their parameter counts), of the
    smallest base it may ship."""
    from export.profiles import estimated_artifact_bytes, target_profile

    gpu = get_settings().worker_compute != "cpu"
    sizes = {cfg.model: params, **(others or {})}
    for i, name in enumerate(cfg.target_names):
        profile = target_profile(cfg, name)  # the target's own size budget, where it sets one
        whose = "your" if "max_artifact_mb" in cfg.target_budgets(name) else "the profile's"
        smallest = min(cfg.target_models(name), key=lambda m: sizes[m])
        mb = estimated_artifact_bytes(profile, sizes[smallest], gpu=gpu) / 2**20
        if (
            profile.on_over_budget.max_artifact_mb == "refuse"
            and mb > profile.max_artifact_mb * SIZE_REFUSAL_MARGIN
        ):
            raise InvalidRequest(
                f"the {name} artifact ({profile.format} {profile.quantization}) of {smallest} would be "
                f"about {mb:.0f} MB, over {whose} {profile.max_artifact_mb:g} MB, which its gate "
                "refuses; pick a smaller base model or another target",
                param=f"targets[{i}]",
                code="target_over_budget",
            )


def _memory(
    shape: Any,
    cfg: JobConfig,
    batch: tuple[int, int],
    seq_len: int,
    trainable: int,
    flops: float,
    steps: int,
    book: PriceBook,
) -> list[GpuFitPublic]:
    """Per GPU class, what the worker's fast path would pick (recipes.speed.fit_micro_batch, the
    same call the recipe makes on the GPU): micro-batch, accumulation, checkpointing, and the memory
    model's peak for it at the longest row; `batch` is (rows per step, sequences per row). A full
    fine-tune that fits no single GPU of a class gets the fewest GPUs of one node that hold it
    sharded (FSDP: recipes/distributed.py), 2, 4 or 8 up to settings.max_gpus_per_job."""
    from recipes.estimate import GIB, GPU_CLASSES, fit_on, peak_memory, seconds_for
    from recipes.speed import MEMORY_HEADROOM, fit_micro_batch, rank_rows

    rows, per_row = batch
    reference = METHODS[cfg.method.type].reference_model
    full_dpo = reference and cfg.training_type == "full"  # LoRA's reference is the base, adapter off
    most = get_settings().max_gpus_per_job if cfg.training_type == "full" else 1  # LoRA: DDP, no sharding
    counts = [1, *(n for n in GPUS_PER_JOB if n <= most)]
    out = []
    for gpu in GPU_CLASSES:
        for gpus in counts:  # the first count that fits, else the last tried (its reason is shown)
            fit = fit_micro_batch(
                shape, cfg.training_type, rank_rows(rows, gpus), seq_len, trainable=trainable,
                sequences_per_row=per_row, reference_copy=full_dpo, fused_loss=not reference,
                budget=int(gpu.memory_gib * GIB * MEMORY_HEADROOM), shards=gpus,
            )  # fmt: skip
            if fit is not None:
                break
        if fit is None:
            gpus = 1  # the reason a job fits nowhere: one GPU's
        one_row = peak_memory(
            shape, cfg.training_type, per_row, seq_len, trainable, reference_copy=full_dpo, shards=gpus
        )
        reason = None
        if fit is None:  # over the card, or within it but over the headroom the worker keeps
            reason = fit_on(gpu, one_row)[1] or (
                f"needs ~{one_row.total_gib:.1f} GiB for one row: over {MEMORY_HEADROOM:.0%} of {gpu.name}"
            )
            if len(counts) > 1:
                reason += f"; nor sharded over {counts[-1]} of them"
        rate = gpu.bf16_tflops * 1e12 * book.throughput.gpu_mfu * gpus
        out.append(
            GpuFitPublic(
                gpu=gpu.name,
                gpus=gpus,
                memory_gib=gpu.memory_gib,
                peak_memory_gib=round(fit[2] if fit else one_row.total_gib, 2),
                fits=fit is not None,
                no_fit_reason=reason,
                micro_batch_size=fit[0] if fit else None,
                grad_accum=rank_rows(rows, gpus) // fit[0] if fit else None,
                activation_checkpointing=fit[1] if fit else None,
                estimated_train_seconds=round(
                    seconds_for(flops, rate, steps, book.throughput.gpu_step_overhead_s), 1
                ),
            )
        )
    return out


def _route(
    cfg: JobConfig, memory: list[GpuFitPublic], price: Callable[[str], float]
) -> tuple[str, bool, str | None]:
    """The compute class a job trains on, and whether it fits there: with one queue, the workers'
    class; with pools (settings.compute_pools), the class the job names or else the pool whose
    quote (`price`) is lowest among those it fits (ties to the earlier listed)."""
    s = get_settings()
    pools = s.pool_classes or [s.worker_compute]
    if cfg.compute_class is not None:
        if cfg.compute_class not in pools:
            raise InvalidRequest(
                f"compute class {cfg.compute_class!r} is not one this deployment runs; its pools are "
                f"{', '.join(pools)}",
                param="compute_class",
                code="unknown_compute_class",
            )
        return (cfg.compute_class, *_fits_on(memory, cfg.compute_class))
    fitting = [c for c in pools if _fits_on(memory, c)[0]]
    if not fitting:
        if len(pools) == 1:
            return (pools[0], *_fits_on(memory, pools[0]))
        reasons = "; ".join(f"{c}: {_fits_on(memory, c)[1]}" for c in pools)
        return pools[0], False, f"fits none of the pools ({reasons})"
    return min(fitting, key=lambda c: (price(c), pools.index(c))), True, None


def _gpus_on(memory: list[GpuFitPublic], compute: str) -> int:
    """The GPUs of one node a job takes on `compute` (1 on the CPU, or where it fits nowhere)."""
    row = next((m for m in memory if m.gpu == compute), None)
    return row.gpus if row is not None and row.fits else 1


def _fits_on(memory: list[GpuFitPublic], compute: str) -> tuple[bool, str | None]:
    if compute == "cpu":
        return True, None  # host RAM dwarfs what a CPU-sized job needs; GPU fits are informative
    row = next((m for m in memory if m.gpu == compute), None)
    if row is None:
        return False, f"the compute class {compute!r} is not a known GPU class"
    return row.fits, row.no_fit_reason


def _stage_seconds(
    cfg: JobConfig, data: _Data, flops: list[float], steps: int, book: PriceBook, compute: str, gpus: int = 1
) -> dict[str, float]:
    """Each stage's seconds. `flops`: the training FLOPs of each base the job fine-tunes, the
    job's model first (a sweep's other bases train, are scored and probed, and export theirs)."""
    from eval.probe import load_probe
    from export.profiles import load_profiles, runtime_of
    from recipes.estimate import train_seconds

    t = book.throughput

    profiles = load_profiles()
    # eval scores the base, the base prompted with k training rows (chat-row methods: DPO's
    # baseline is the bare base; the longer prompt is priced as a plain row), the fine-tuned model
    # and each GGUF or ONNX artifact in its own runtime (a format with a runtime, export/formats/);
    # a `best_within_budget` target exports and scores every quantization of its sweep
    variants = {
        name: sweep_size(cfg.target_select(name)) * len(cfg.target_models(name)) for name in cfg.target_names
    }
    bases = len(flops)
    per_base = 3 if METHODS[cfg.method.type].rows == "chat" else 2
    runs = per_base * bases + sum(n for name, n in variants.items() if runtime_of(profiles[name]) is not None)
    # The evaluate stage also answers the general-ability probe (eval/probe.py) with base and
    # fine-tuned: len(probe) generations each, 2 x 64 = 128 today. A probe answer is capped at
    # PROBE_MAX_NEW_TOKENS (12), under a classification row's 16, so each is priced as one eval row
    # (eval/probe.py measured 6-13 s for 32 items on the tiny LFM2, 0.2-0.4 s an item):
    # evaluate = (min(eval_rows, MAX_EVAL_ROWS) x runs + len(probe) x 2 x bases) x eval_s_per_row.
    generations = min(data.eval_rows, MAX_EVAL_ROWS) * runs + len(load_probe()) * 2 * bases
    seconds = {
        "prepare": t.prepare_s,
        "synthesize": (data.train_rows + data.eval_rows) * t.synth_s_per_row
        if cfg.task and not cfg.training_file
        else 0.0,
        "train": sum(train_seconds(f, steps, compute, t, gpus) for f in flops)
        + (_selection_seconds(cfg, data, t) + _replay_seconds(cfg, data, t)) * bases,
        "evaluate": generations * t.eval_s_per_row,
        "export": sum(variants.values()) * t.export_s_per_target,
        "gate": t.gate_s,
        "publish": t.publish_s,
    }
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    seconds["total"] = round(sum(seconds.values()), 1)
    return seconds


def _selection_seconds(cfg: JobConfig, data: _Data, t: Any) -> float:
    """The held-out scores taken during training to keep the best checkpoint: `evals` times, each
    a greedy answer to at most `eval_rows` held-out rows, priced as the evaluate stage's rows (the
    early stop that may follow is not counted: the quote is for the planned steps)."""
    policy = cfg.checkpoints
    if policy.select != "best":
        return 0.0
    return float(policy.evals * min(policy.eval_rows, data.eval_rows) * t.eval_s_per_row)


def _replay_seconds(cfg: JobConfig, data: _Data, t: Any) -> float:
    """The base model answering the replay prompts before training: each answer is up to
    REPLAY_MAX_NEW_TOKENS tokens, priced as that many / 16 eval rows (an eval row's answer is
    capped at 16 tokens, eval.runners.MAX_NEW_TOKENS["classification"])."""
    from recipes.replay import MAX_NEW_TOKENS as REPLAY_MAX_NEW_TOKENS

    n = replay_count(data.train_rows, cfg.replay, cfg.method.type)
    return float(n * REPLAY_MAX_NEW_TOKENS / 16 * t.eval_s_per_row)


def _quote(
    cfg: JobConfig,
    seconds: dict[str, float],
    data: _Data,
    params: int,
    book: PriceBook,
    compute: str,
    gpus: int = 1,
    others: dict[str, int] | None = None,
) -> QuotePublic:
    """Each stage's estimated seconds at the rate it will be billed at (the ledger's rule: train,
    evaluate and export run on the job's compute class, on all `gpus` it holds, billed as GPU
    seconds: wall seconds x gpus, except export when pools hand it to a CPU worker; the rest on
    CPU), teacher tokens, and one month of storage for
    the artifacts."""
    from export.profiles import estimated_artifact_bytes, load_profiles

    items = []
    routed = queue_for(compute, gpus)
    for stage in STAGES:
        if not seconds.get(stage):
            continue
        # with pools, a GPU job's export runs on a CPU worker (services/pools.py queue_for_stage)
        on_class = stage in GPU_STAGES and queue_for_stage(routed, stage, cfg.synthesizes) == routed
        cls, held = (compute, gpus) if on_class else ("cpu", 1)
        where = f"{held} x {cls}" if held > 1 else cls
        rate = book.compute_rate(cls)
        items.append(_item(stage, f"{stage} on {where}", f"{cls}_second", seconds[stage] * held, rate))
    if cfg.task and not cfg.training_file:
        t = book.throughput
        per_row = t.teacher_tokens_per_row + (t.round_trip_tokens_per_row if cfg.task.round_trips else 0.0)
        asked_back = cfg.task.seeds_asked_back * t.round_trip_tokens_per_row
        tokens_k = ((data.train_rows + data.eval_rows) * per_row + asked_back) / 1000
        items.append(
            _item("synthesize", "teacher tokens", "teacher_1k_tokens", tokens_k, book.teacher_1k_tokens)
        )
    profiles = load_profiles()
    gpu = compute != "cpu"
    # a sweep target may ship another base: priced at the largest it may ship
    sizes = {cfg.model: params, **(others or {})}
    gigabytes = (
        sum(
            estimated_artifact_bytes(
                profiles[t], max(sizes.get(m, params) for m in cfg.target_models(t)), gpu=gpu
            )
            for t in cfg.target_names
        )
        / GB
    )
    items.append(_item("storage", "artifacts, one month", "gb_month", gigabytes, book.storage_gb_month))
    return QuotePublic(compute=compute, items=items, total_usd=round(sum(i.amount_usd for i in items), 6))


def _item(stage: str, description: str, unit: str, quantity: float, price: float) -> CostItemPublic:
    return CostItemPublic(
        stage=stage,
        description=description,
        unit=unit,
        quantity=round(quantity, 4),
        unit_price_usd=price,
        amount_usd=round(quantity * price, 6),
    )
