"""Run llama.cpp's convert_hf_to_gguf.py with its own gguf-py and a pre-tokenizer fallback.

Run as a script in a child process (export/gguf_export.py does this), never imported: the vendored
gguf-py has the same package name as the PyPI `gguf` in our environment, and only one of the two
can be imported per process.

    python _convert_runner.py LLAMA_CPP_DIR FALLBACK_PRE MODEL_DIR [converter args...]

FALLBACK_PRE is the `tokenizer.ggml.pre` written when the converter does not know the tokenizer's
hash ("" turns the fallback off). Real LFM2 tokenizers are known (pre = "lfm2"); an in-house
byte-level BPE, like the tests' tiny tokenizer, is not, and uses the GPT-2 split regex.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

WARNING_PREFIX = "EDGETUNE-WARNING: "


def main() -> None:
    llama_cpp_dir, fallback, *converter_args = sys.argv[1:]
    root = Path(llama_cpp_dir).resolve()
    # sys.path[0] is this file's folder (registry/); its module names must not shadow anything the
    # converter imports. The vendored gguf-py goes ahead of site-packages.
    sys.path[0:1] = [str(root), str(root / "gguf-py")]

    import gguf

    if not Path(gguf.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"imported gguf from {gguf.__file__}, not the copy vendored in {root}")

    import conversion.base as base  # type: ignore[import-not-found]

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: object, tokenizer: object) -> str:
        try:
            return str(original(self, tokenizer))
        except NotImplementedError:
            if not fallback:
                raise
            sys.stderr.write(
                f"{WARNING_PREFIX}the tokenizer's BPE pre-tokenizer hash is unknown to llama.cpp; "
                f"wrote tokenizer.ggml.pre={fallback!r}\n"
            )
            return fallback

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    script = str(root / "convert_hf_to_gguf.py")
    sys.argv = [script, *converter_args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
