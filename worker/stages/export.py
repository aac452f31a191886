"""Export: each target's artifact, scored as shipped (with its grammar), and its device budgets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.lists import METHODS
from services.device_benchmarks import MEASURABLE_FORMATS
from services.errors import ExportFailed
from worker.context import JobContext
from worker.held_out import read_rows
from worker.stages.common import made_from, other_base_dir
from worker.stages.device_figures import on_device
from worker.stages.sweep import sweep_target

if TYPE_CHECKING:
    from eval.scoring import HeldOut
from worker.stages.evaluate import eval_rows, score_summary

_DEVICE_KEYS = ("device_stats", "device_prediction")  # an agent's figures; the device model's


def _score_artifact(
    profile: Any, path: Path, held_out: HeldOut, entry: dict[str, Any], grammar: Path | None = None
) -> None:
    """Score the artifact in its own runtime configured to the device's context cap (capped by the
    model's trained context, past which no runtime should be set), recording decode speed and
    memory for the gate's budgets. A GGUF with the task's grammar is scored as it ships, under
    the grammar (what the gate reads), and once without it (`eval_result_free`), so the report
    shows what constraining bought."""
    from eval.runners import ArtifactRunError, evaluate_model
    from eval.runtime_stats import RuntimeStats
    from export.formats import FORMATS
    from export.profiles import eval_context

    rows, task_type, labels = held_out
    fmt = FORMATS[profile.format]
    stats = RuntimeStats(runtime=fmt.runtime or "")
    n_ctx = eval_context(profile, path)
    text = grammar.read_text() if grammar is not None and fmt.grammar else None
    if text is not None:  # in its own process too (stats given), so a runtime crash is contained
        unused = RuntimeStats(runtime=stats.runtime)
        free = evaluate_model(profile.format, path, rows, task_type, labels, n_ctx=n_ctx, stats=unused)
        entry["eval_result_free"] = free.to_dict()
        entry["grammar"] = str(grammar)
    # the runner kind is the format's name: "gguf" in llama.cpp, "onnx" in onnxruntime
    try:
        scored = evaluate_model(
            profile.format, path, rows, task_type, labels, n_ctx=n_ctx, stats=stats, grammar=text
        )
    except ValueError as exc:  # llama.cpp refused the grammar for this model's vocabulary
        raise ArtifactRunError(f"the task grammar could not be used with {path.name}: {exc}") from exc
    entry["eval"] = {"metric": scored.metric, **score_summary(scored)}
    if text is not None:
        entry["eval"]["free"] = entry["eval_result_free"]["score"]
    entry["eval_result"] = scored.to_dict()
    entry["runtime_stats"] = stats.to_dict()


def _task_grammar(ctx: JobContext, held_out: HeldOut) -> Path | None:
    """The task's llama.cpp grammar (eval/grammar.py) written beside the exports, or None when
    the task has nothing to constrain. An upload scored as classification gets its labels from
    every answer it trained and is scored on, so no label the model learned is masked out."""
    from eval.grammar import grammar_for

    _, task_type, labels = held_out
    task = ctx.config.task
    if task is None and task_type == "classification":
        from recipes.chat_data import normalize_row
        from recipes.preference_data import as_chat_row

        # a preference pair's chosen answer is what the model learned to give
        preference = METHODS[ctx.config.method.type].rows == "preference"
        as_chat = as_chat_row if preference else normalize_row
        trained = [as_chat(r) for r in read_rows(Path(ctx.state["train_path"]))]
        answers = {r["messages"][-1].get("content") or "" for r in trained}
        labels = sorted(answers.union(labels or []))
    text = grammar_for(
        task_type,
        labels,
        task.output_schema if task is not None else None,
        task.tools if task is not None else None,
    )
    if text is None:
        return None
    path = ctx.work_dir / "export" / "task.gbnf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _trained(ctx: JobContext, model: str) -> dict[str, Any]:
    """What the train stage made of a base: the job's model, or one of a sweep's other bases
    (base_model_dir, merged_dir, adapter_dir), and the folder its exports go to."""
    own = model == ctx.config.model
    made = {k: made_from(ctx, model).get(k) for k in ("base_model_dir", "merged_dir", "adapter_dir")}
    return made | {"export_dir": ctx.work_dir / "export" if own else other_base_dir(ctx, model) / "export"}


def _adapter_entry(ctx: JobContext, model: str) -> dict[str, Any]:
    from export.adapter_gguf import adapter_info
    from export.formats.gguf import gguf_adapter

    made = _trained(ctx, model)
    base_dir, adapter_dir = Path(made["base_model_dir"]), Path(made["adapter_dir"])
    adapter = gguf_adapter(adapter_dir, base_dir, made["export_dir"], model)
    return {"files": [str(adapter)], "info": adapter_info(adapter, adapter_dir, base_dir, model)}


def _export_one(
    ctx: JobContext, profile: Any, held_out: HeldOut, grammar: Path | None, model: str
) -> dict[str, Any]:
    """One target's files from the fine-tune of `model`, scored in their runtime, with the
    profile's budgets measured."""
    from eval.runners import ArtifactRunError
    from export.device_budgets import budget_checks
    from export.onnx_export import OnnxExportError
    from export.profiles import runtime_of
    from export.targets import export_target

    target, made = profile.name, _trained(ctx, model)
    try:
        paths = export_target(
            Path(made["merged_dir"]),
            profile,
            made["export_dir"],
            adapter_dir=Path(made["adapter_dir"]) if made["adapter_dir"] else None,
        )
        entry: dict[str, Any] = {"files": [str(p) for p in paths]}
        if runtime_of(profile) is not None:
            _score_artifact(profile, paths[0], held_out, entry, grammar)
    except (OnnxExportError, ArtifactRunError) as exc:
        raise ExportFailed(ctx.config.target_names.index(target), f"{target}: {exc}") from exc
    if profile.format in MEASURABLE_FORMATS:
        measured, predicted = on_device(ctx, profile, paths[0], entry.get("runtime_stats"))
        entry |= {"device_stats": measured} if measured else {}
        entry |= {"device_prediction": predicted} if predicted else {}
    checks = budget_checks(profile, paths, entry.get("runtime_stats"), entry.get("device_stats"))
    entry["budgets"] = [b.model_dump() for b in checks]
    if model != ctx.config.model:
        entry["base_model"] = model  # publish names it in the manifest; the gate reads its fine-tune
    return entry


def _quantization(profile: Any, entry: dict[str, Any]) -> str:
    """The quantization shipped: the sweep's choice, else the profile's."""
    return str((entry.get("selection") or {}).get("chosen") or profile.quantization or "")


def export(ctx: JobContext) -> dict[str, Any]:
    from export.formats import FORMATS
    from export.profiles import target_profile

    held_out = eval_rows(ctx)  # read once: every artifact answers the same rows
    grammar = _task_grammar(ctx, held_out)  # one grammar for every GGUF target
    exported: dict[str, Any] = {}
    adapters: dict[str, dict[str, Any]] = {}  # by base: converted and described once, shipped per GGUF target
    for target in ctx.config.target_names:
        ctx.check_cancel()
        profile = target_profile(ctx.config, target)
        if ctx.config.target_select(target) == "best_within_budget":
            entry = sweep_target(ctx, profile, lambda p, m: _export_one(ctx, p, held_out, grammar, m))
        else:
            entry = _export_one(ctx, profile, held_out, grammar, ctx.config.model)
        note, model = "", entry.get("base_model") or ctx.config.model
        if FORMATS[profile.format].ships_adapter and _trained(ctx, model)["adapter_dir"]:
            # The adapter alone (LoRA jobs), for devices that already hold the base GGUF; publish
            # ships it as its own artifact `<target>-adapter`. Converted once, it fits every quantization.
            adapters[model] = adapters.get(model) or _adapter_entry(ctx, model)
            entry["adapter"] = adapters[model]
            size = Path(adapters[model]["files"][0]).stat().st_size
            note = f" + LoRA adapter ({size / 2**20:.1f} MB)"
        exported[target] = entry
        ctx.event(
            f"Exported {target}: {profile.format} {_quantization(profile, entry)}".rstrip()
            + (f" of {model}" if model != ctx.config.model else "")
            + note,
            data={
                "target": target,
                **{k: v for k, v in entry.items() if k in ("eval", "runtime_stats", *_DEVICE_KEYS)},
            },
        )
    return {"exported": exported}
