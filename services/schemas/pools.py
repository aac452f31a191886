"""The operator's view of the worker pools (GET /v1/operator/pools, `edgetune pools`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class PoolPublic(BaseModel):
    object: Literal["pool"] = "pool"
    queue: str
    compute: list[str]  # the compute classes whose jobs go to this queue ("cpu" takes the CPU work too)
    gpus: int = 1  # GPUs of one node each job on this queue trains on (multi-GPU jobs: "<class>.x<N>")
    depth: int  # messages waiting, not those a worker holds
    live_workers: list[str] | None  # None: the broker cannot ask (the embedded SQLite broker)


class PoolsPublic(BaseModel):
    object: Literal["list"] = "list"
    routing: Literal["per_class", "one_queue"]
    data: list[PoolPublic]
