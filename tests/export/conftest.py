from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.tiny_artifacts import TinyArtifacts, ensure_converter, tiny_artifacts, tiny_quantized


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    return ensure_converter()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyArtifacts:
    """Tiny random LFM2 (HF dir) and its F16 GGUF."""
    return tiny_artifacts(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.getbasetemp()
    return {quant: tiny_quantized(base, quant) for quant in ("Q8_0", "Q4_K_M")}
