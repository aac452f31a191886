"""Get llama.cpp's HF -> GGUF converters for the installed llama-cpp-python.

`convert_hf_to_gguf.py` (a checkpoint) and `convert_lora_to_gguf.py` (a PEFT LoRA adapter, built on
the same `conversion/` classes) are plain scripts that ship only in llama-cpp-python's *sdist*
(under `vendor/llama.cpp/`), never in its wheel. They must run with the `gguf-py` vendored next to
them: the PyPI `gguf` release carries the same version number but older constants (it fails with
`AttributeError: DFLASH`). Taking the scripts, `conversion/` and `gguf-py/` from the sdist of the
*installed* version also pins them to the llama.cpp commit whose `llama_model_quantize` and loader
we use, so the files they write are ones our runtime can read.

    python -m export.converter fetch [--dest DIR]   # `make install` runs this
    python -m export.converter path                  # where the converters are
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ENV_VAR = "EDGETUNE_LLAMA_CPP_DIR"
SCRIPT = "convert_hf_to_gguf.py"
LORA_SCRIPT = "convert_lora_to_gguf.py"
# A fetch is complete only with every script: a directory fetched before one was added (same
# version stamp) is fetched again rather than taken as up to date.
SCRIPTS = (SCRIPT, LORA_SCRIPT)
STAMP = ".edgetune-llama-cpp-python-version"

# What the scripts need from vendor/llama.cpp/: themselves, the per-architecture `conversion` package,
# the matching gguf-py, and models/templates/ (a few converters, not LFM2's, read chat templates from it).
# LICENSE because llama.cpp is MIT and we keep a copy of its code. The rest of the tree (75 MB of
# tokenizer test vocabularies, C++ sources) is not needed to convert.
_VENDOR = "vendor/llama.cpp/"
_KEEP = (*SCRIPTS, "conversion/", "gguf-py/", "models/templates/", "LICENSE")


class ConverterNotFoundError(FileNotFoundError):
    """The converter has not been fetched (or was fetched for another llama-cpp-python version)."""


def installed_version() -> str:
    """Version of the llama-cpp-python distribution installed in this environment."""
    return importlib.metadata.version("llama-cpp-python")


def default_dir() -> Path:
    # Inside the environment that holds llama-cpp-python (`<repo>/.venv` here), so a rebuilt venv
    # never sees a converter from an older llama.cpp.
    return Path(sys.prefix) / "share" / "edgetune" / "llama.cpp"


def converter_dir(script: str = SCRIPT) -> Path:
    """Directory holding `script` (one of `SCRIPTS`), `conversion/` and `gguf-py/`.

    `$EDGETUNE_LLAMA_CPP_DIR` (e.g. a llama.cpp checkout) wins over the default location.

    Raises:
        ConverterNotFoundError: `script` is not there, or it was fetched for another llama-cpp-python.
    """
    path = Path(os.environ.get(ENV_VAR) or default_dir())
    if not (path / script).is_file():
        raise ConverterNotFoundError(
            f"llama.cpp's {script} is not in {path}. Run `make install` "
            f"(or `python -m export.converter fetch`), or point ${ENV_VAR} at a llama.cpp checkout."
        )
    stamp = path / STAMP
    if stamp.is_file() and stamp.read_text().strip() != installed_version():
        raise ConverterNotFoundError(
            f"the converter in {path} comes from llama-cpp-python {stamp.read_text().strip()}, but "
            f"{installed_version()} is installed. Run `python -m export.converter fetch` again."
        )
    return path


def _wanted(member: tarfile.TarInfo) -> str | None:
    """Path relative to vendor/llama.cpp/ when the sdist member is one we keep, else None."""
    _, _, rest = member.name.partition("/")  # strip the sdist's top folder, llama_cpp_python-X.Y.Z/
    if not rest.startswith(_VENDOR) or not (member.isfile() or member.isdir()):
        return None
    rel = rest[len(_VENDOR) :]
    return rel if any(rel == k or rel.startswith(k) for k in _KEEP) else None


def _extract(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        for member in tar:
            rel = _wanted(member)
            if rel is None or member.isdir():
                continue
            target = dest / rel
            if not target.resolve().is_relative_to(dest.resolve()):
                raise ValueError(f"refusing to extract {member.name!r} outside {dest}")
            src = tar.extractfile(member)
            assert src is not None  # regular file
            target.parent.mkdir(parents=True, exist_ok=True)
            with src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


def fetch_converter(dest: Path | None = None, version: str | None = None) -> Path:
    """Download the llama-cpp-python sdist and keep only what the converter needs, in `dest`.

    Idempotent: a stamp file records the version, and a matching stamp means nothing to do. The
    sdist is ~77 MB and comes from the package index pip is configured with.
    """
    dest = Path(dest or default_dir())
    version = version or installed_version()
    stamp = dest / STAMP
    complete = all((dest / script).is_file() for script in SCRIPTS)
    if complete and stamp.is_file() and stamp.read_text().strip() == version:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        cmd += [f"llama-cpp-python=={version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        # Extract beside `dest` and swap in at the end, so an interrupted fetch never leaves a
        # half-filled converter directory that looks valid.
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
        try:
            _extract(sdist, staging)
            missing = [script for script in SCRIPTS if not (staging / script).is_file()]
            if missing:
                raise RuntimeError(f"llama-cpp-python {version}'s sdist has no {_VENDOR}{missing[0]}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    (staging / STAMP).write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.converter", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and extract the converters (idempotent)")
    fetch.add_argument("--dest", type=Path, default=None, help=f"default: {default_dir()}")
    sub.add_parser("path", help="print where the converter is, or fail")
    args = parser.parse_args(argv)
    path = fetch_converter(args.dest) if args.command == "fetch" else converter_dir()
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
