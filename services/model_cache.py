"""Loaded llama.cpp models, kept between chat completions within a memory budget.

Loading a GGUF takes from a fraction of a second to several, so models stay loaded; what they
hold is about their file's size (weights are memory-mapped) plus a small KV cache, so the budget
counts file bytes. Past it, the least recently used models are dropped. A `llama_cpp.Llama` is
not re-entrant: each model has its own lock, held for a whole generation, so two requests to one
model take turns while requests to different models run side by side.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from eval.runtime_stats import default_threads
from infra.settings import get_settings

log = logging.getLogger(__name__)

Loader = Callable[[Path, int], Any]  # (GGUF path, context) -> a loaded model


@dataclass
class _Entry:
    key: str
    path: Path
    n_ctx: int
    bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None


class ModelCache:
    def __init__(self, budget_bytes: int, loader: Loader) -> None:
        self.budget_bytes, self._load = budget_bytes, loader
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries only; never held while loading or generating

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(e.bytes for e in self._entries.values())

    @contextmanager
    def use(self, key: str, path: Path, n_ctx: int) -> Iterator[Any]:
        """The model for `key` (loaded from `path` on first use), held exclusively for the block."""
        entry = self._entry(key, path, n_ctx)
        with entry.lock:
            if entry.model is None:
                entry.model = self._load(path, n_ctx)
            yield entry.model

    def _entry(self, key: str, path: Path, n_ctx: int) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(key, path, n_ctx, path.stat().st_size)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            self._evict(keep=key)
            return entry

    def _evict(self, keep: str) -> None:
        total = sum(e.bytes for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.budget_bytes or key == keep:
                continue
            entry = self._entries.pop(key)
            total -= entry.bytes
            _release(entry)


def _release(entry: _Entry) -> None:
    """Free a dropped model now unless a request is generating with it; that request keeps its
    reference and the model is freed when it ends."""
    if entry.lock.acquire(blocking=False):
        try:
            if entry.model is not None and hasattr(entry.model, "close"):
                entry.model.close()
            entry.model = None
        finally:
            entry.lock.release()
    log.info("chat model %s evicted (%d bytes)", entry.key, entry.bytes)


def load_gguf(path: Path, n_ctx: int) -> Any:
    from llama_cpp import Llama

    threads = get_settings().inference_threads or default_threads()
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False)


@lru_cache
def model_cache() -> ModelCache:
    """The API process's cache, sized by EDGETUNE_INFERENCE_CACHE_MB."""
    return ModelCache(get_settings().inference_cache_mb * 1024 * 1024, load_gguf)
