"""What edgetune knows about one artifact format, in one record.

Each format's module (export/formats/<name>.py) builds its `ArtifactFormat`; export/formats/__init__.py
lists them. Everything else reads the record: the exporter (export/targets.py) calls `make`, device
profiles check their quantization against `quantizations`, the plan sizes the artifact with
`estimate_bytes` and counts a scoring run for each format with a `runtime`, the export stage scores the
artifact in that runtime (the eval runner kind is the format's name, eval/runners.py) and applies the
task grammar where `grammar` is set, and the model card takes its run instructions and hub metadata
from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExportJob:
    """What a format's `make` gets: it writes the artifact's files under `out_dir` and returns them,
    the model file first."""

    merged_dir: Path  # the merged fine-tune (`save_pretrained` output)
    out_dir: Path  # <work_dir>/<profile name>
    work_dir: Path  # the job's export folder: intermediates shared by several targets live here
    quantization: str
    adapter_dir: Path | None  # a LoRA job's PEFT adapter; None after a full fine-tune


@dataclass(frozen=True)
class HubFacts:
    """The model card's front matter: Hugging Face's library name, the model-tree relation to the
    base and the tags."""

    library: str
    relation: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    # What a profile may ask for as `quantization` / `quality_quantization`.
    quantizations: tuple[str, ...]
    make: Callable[[ExportJob], list[Path]]
    # Average stored bits per weight of each quantization, for the size before the artifact exists
    # (quotes and the plan's budget refusal).
    bits_per_weight: dict[str, float]
    # The oldest runtime the card promises, as text.
    min_runtime: Callable[[], str]
    # The card's "How to run" section from the manifest.
    how_to_run: Callable[[dict[str, Any]], str]
    hub: HubFacts
    # The runtime the artifact is scored in as shipped; None: not scored (the merged weights are
    # what the evaluate stage already scored).
    runtime: str | None = None
    # The runtime samples under the task's GBNF grammar, so the artifact ships one.
    grammar: bool = False
    # A LoRA job also ships its adapter converted for this format's runtime (`<target>-adapter`).
    ships_adapter: bool = False
    # The card's "Constrained output" text when the format ships no grammar, for a task scored on
    # one right answer; None: nothing to say.
    constraints_note: Callable[[], str] | None = None
    # The artifact is the merged checkpoint itself, sized by its dtype rather than `bits_per_weight`.
    merged_weights: bool = False

    def estimate_bytes(self, params: int, quantization: str, gpu: bool) -> int:
        """The artifact's size in bytes: params x bits per weight (16 for a quantization not in the
        table); a merged checkpoint is saved in bf16 when trained on a GPU, fp32 on a CPU."""
        if self.merged_weights:
            return params * (2 if gpu else 4)
        return int(params * self.bits_per_weight.get(quantization, 16.0) / 8)
