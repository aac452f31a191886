"""The price book: one YAML file that quotes and the usage ledger both price from."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from infra.settings import get_settings

DEFAULT_PATH = Path(__file__).with_name("price_book.yaml")


class Throughput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_effective_tflops: float = Field(gt=0)
    cpu_step_overhead_s: float = Field(ge=0)
    gpu_mfu: float = Field(gt=0, le=1)
    gpu_step_overhead_s: float = Field(ge=0)
    prepare_s: float = Field(ge=0)
    synth_s_per_row: float = Field(ge=0)
    teacher_tokens_per_row: float = Field(ge=0)
    round_trip_tokens_per_row: float = Field(ge=0)
    eval_s_per_row: float = Field(ge=0)
    export_s_per_target: float = Field(ge=0)
    # default for an operator's price book written before the quote listed the gate
    gate_s: float = Field(default=1.0, ge=0)
    publish_s: float = Field(ge=0)


class InferenceRates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)  # USD per million prompt tokens
    output: float = Field(ge=0)  # USD per million completion tokens


class PriceBook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compute_second: dict[str, float]
    teacher_1k_tokens: float = Field(ge=0)
    storage_gb_month: float = Field(ge=0)
    # A book written before chat completions existed still loads, at these rates.
    inference_1m_tokens: InferenceRates = InferenceRates(input=0.40, output=2.50)
    throughput: Throughput

    def compute_rate(self, compute: str) -> float:
        if compute not in self.compute_second:
            raise KeyError(f"the price book has no compute rate for {compute!r}")
        return self.compute_second[compute]


@lru_cache
def price_book() -> PriceBook:
    """The book in force: the YAML file, with the EDGETUNE_PRICE_* overrides applied."""
    s = get_settings()
    book = PriceBook.model_validate(yaml.safe_load((s.price_book or DEFAULT_PATH).read_text()))
    if s.price_cpu_second is not None:
        book.compute_second["cpu"] = s.price_cpu_second
    if s.price_gpu_second is not None and s.worker_compute != "cpu":
        book.compute_second[s.worker_compute] = s.price_gpu_second
    if s.price_teacher_1k_tokens is not None:
        book.teacher_1k_tokens = s.price_teacher_1k_tokens
    return book
