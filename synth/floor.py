"""The least a synthesized set must hold to be trained on, and what a short one lacks.

A teacher can keep far fewer rows than were asked for (the bundled 135M keeps 2-3% of its
extraction texts). A job that trains on what is left anyway is a model of noise with a gate on a
handful of rows, and the customer is told it worked. So synthesis states its floor up front, and a
set below it fails `insufficient_data` instead of training (worker/stages/, the dataset task).

The floor, for a task asking for N rows of which E are held out (infra/job_config.eval_quota):

    training rows     >= min(N - E, max(MIN_TRAIN_ROWS, ceil(MIN_KEPT_FRACTION * (N - E))))
    per label / tool  >= min(its training target, MIN_TRAIN_ROWS_PER_KEY)
    eval rows         >= min(E, min_eval_rows)   (the job's gate; the dataset API asks 1)

Half the training rows asked for is where the benchmarks' fine-tunes stop learning the task at
all on small sets; 8 rows is the least a few epochs of LoRA generalise from; 3 per label keeps a
class the model never saw from being "learned" from one or two rows.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

MIN_KEPT_FRACTION = 0.5
MIN_TRAIN_ROWS = 8
MIN_TRAIN_ROWS_PER_KEY = 3


def train_targets(
    targets: dict[str | None, int], eval_targets: dict[str | None, int]
) -> dict[str | None, int]:
    """Training rows wanted per key: the key's rows less its held-out quota."""
    return {key: n - eval_targets.get(key, 0) for key, n in targets.items()}


def floor(
    targets: dict[str | None, int], eval_targets: dict[str | None, int], min_eval_rows: int
) -> dict[str, Any]:
    """The floor above, as it goes into the synthesis report (JSON)."""
    train = train_targets(targets, eval_targets)
    want_train, want_eval = sum(train.values()), sum(eval_targets.values())
    out: dict[str, Any] = {
        "train": min(want_train, max(MIN_TRAIN_ROWS, math.ceil(MIN_KEPT_FRACTION * want_train))),
        "eval": min(want_eval, max(min_eval_rows, 1)),
    }
    if len(targets) > 1 or None not in targets:
        out["train_per_key"] = {str(k): min(n, MIN_TRAIN_ROWS_PER_KEY) for k, n in train.items()}
    return out


def below_floor(report_floor: dict[str, Any], train_keys: list[str | None], n_eval: int) -> list[str]:
    """What a split lacks against its floor, in words; empty when it meets it."""
    problems = []
    if len(train_keys) < report_floor["train"]:
        problems.append(f"{len(train_keys)} training rows, fewer than the {report_floor['train']} needed")
    if n_eval < report_floor["eval"]:
        problems.append(f"{n_eval} held-out rows, fewer than the {report_floor['eval']} the gate needs")
    have = Counter(str(k) for k in train_keys)
    for key, need in (report_floor.get("train_per_key") or {}).items():
        if have[key] < need:
            problems.append(f"{have[key]} training rows for {key!r}, fewer than {need}")
    return problems


def top_drop_reasons(dropped: dict[str, int], n: int = 3) -> str:
    """The commonest drop reasons, e.g. "value_not_in_text 61, duplicate 12, too_short 4"."""
    top = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{reason} {count}" for reason, count in top) or "none"
