"""A device profile's budgets, paired with what the artifact measured, for the eval gate.

Size is the artifact's files on disk. Memory and decode speed come from the eval runner that scored
the artifact in its own runtime at the profile's context cap (eval/runtime_stats.py), so they are
figures of the worker host, and `where` says which host and runtime; memory is never taken below
the artifact's size. An artifact that is not run (merged safetensors for GPU servers) is held to
its size budget only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.gate import BudgetCheck
from export.profiles import DeviceProfile


def artifact_mb(files: list[Path]) -> float:
    return sum(f.stat().st_size for f in files) / 2**20


NO_PREFILL = "no device agent measured it, and the worker host measures no prefill"


def budget_checks(
    profile: DeviceProfile,
    files: list[Path],
    stats: dict[str, Any] | None,
    device: dict[str, Any] | None = None,
) -> list[BudgetCheck]:
    """The profile's budgets for one exported artifact.

    Args:
        stats (`dict`, *optional*): `RuntimeStats.to_dict()` from scoring the artifact; None when
            it was not run, which leaves the memory and speed budgets out.
        device (`dict`, *optional*): a device agent's figures for the artifact (its
            `peak_memory_mb`, `decode_tokens_per_s` and `measured_at`); when given they replace
            the host's, measured on the device itself, but for a figure the agent did not
            measure (memory, under llama-bench), which stays the host's and says so.
    """
    rules = profile.on_over_budget
    checks = [
        BudgetCheck(
            budget="max_artifact_mb",
            limit=profile.max_artifact_mb,
            measured=round(artifact_mb(files), 2),
            rule=rules.max_artifact_mb,
            where="artifact files",
        )
    ]
    # A device agent's figures replace the host's; memory stays the host's where the agent gave
    # none (llama-bench measures none at the profile's context: eval/llama_bench.py).
    rss = _figure((device, "peak_memory_mb"), (stats, "peak_rss_growth_mb"))
    # A device holds at least the whole file: onnxruntime maps the graph's weights, so an embedding
    # row no prompt used never becomes resident here (the 350M q4 graph measured 258 MB of RSS for a
    # 468 MB file), while a browser reads the file into memory.
    ram = (max(rss[0], checks[0].measured or 0.0), rss[1]) if rss and rss[0] is not None else rss
    speed = _figure((device, "decode_tokens_per_s"), (stats, "decode_tokens_per_s"))
    # the host measures no prefill: without a device's figure the floor is noted as not checked
    prefill = _figure((device, "prefill_tokens_per_s"), (None, "")) or (None, NO_PREFILL)
    measured = (
        ("max_ram_mb", profile.max_ram_mb, ram),
        ("min_decode_tokens_per_s", profile.min_decode_tokens_per_s, speed),
        ("min_prefill_tokens_per_s", profile.min_prefill_tokens_per_s, prefill),
    )
    for budget, limit, figure in measured:
        if limit is not None and figure is not None:
            value, where = figure
            rule = getattr(rules, budget)
            checks.append(
                BudgetCheck.model_validate(
                    {"budget": budget, "limit": limit, "measured": value, "rule": rule, "where": where}
                )
            )
    return checks


def _figure(
    device: tuple[dict[str, Any] | None, str], host: tuple[dict[str, Any] | None, str]
) -> tuple[float | None, str] | None:
    """(value, where measured) of one figure, each source given with its key: the device agent's
    when it has it, else the host's; None when neither was measured (the budget is left out)."""
    (agent, agent_key), (stats, stats_key) = device, host
    if agent is not None and (agent.get(agent_key) is not None or stats is None):
        return agent.get(agent_key), agent["measured_at"]
    if stats is not None:
        return stats.get(stats_key), stats["measured_at"]
    return None
