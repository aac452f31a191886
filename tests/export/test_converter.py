from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from export import converter
from export.converter import (
    LORA_SCRIPT,
    SCRIPT,
    STAMP,
    ConverterNotFoundError,
    converter_dir,
    fetch_converter,
    installed_version,
)


def test_fetched_converter_has_script_conversion_and_vendored_gguf(llama_cpp_dir: Path) -> None:
    assert (llama_cpp_dir / "convert_hf_to_gguf.py").is_file()
    assert (llama_cpp_dir / "convert_lora_to_gguf.py").is_file()
    assert (llama_cpp_dir / "conversion" / "lfm2.py").is_file()
    assert (llama_cpp_dir / "gguf-py" / "gguf" / "constants.py").is_file()
    assert (llama_cpp_dir / STAMP).read_text().strip() == installed_version()
    # Only what conversion needs: no C++ sources, no 75 MB of test vocabularies.
    assert not (llama_cpp_dir / "src").exists()
    assert not list((llama_cpp_dir / "models").glob("ggml-vocab-*.gguf"))


def test_fetch_is_a_no_op_when_the_stamp_matches(
    llama_cpp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("fetch_converter downloaded although the converter is there")

    monkeypatch.setattr(converter.subprocess, "run", no_download)
    assert fetch_converter(llama_cpp_dir) == llama_cpp_dir


def test_missing_converter_says_to_run_make_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(converter.ENV_VAR, str(tmp_path))
    with pytest.raises(ConverterNotFoundError, match="make install"):
        converter_dir()


def test_converter_from_another_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    (tmp_path / STAMP).write_text("0.0.1\n")
    monkeypatch.setenv(converter.ENV_VAR, str(tmp_path))
    with pytest.raises(ConverterNotFoundError, match="0.0.1"):
        converter_dir()


def _fake_sdist(path: Path, version: str, *, lora: bool = True) -> None:
    top = f"llama_cpp_python-{version}/"
    members = {
        "vendor/llama.cpp/convert_hf_to_gguf.py": b"# converter\n",
        **({"vendor/llama.cpp/convert_lora_to_gguf.py": b"# lora converter\n"} if lora else {}),
        "vendor/llama.cpp/convert_llama_ggml_to_gguf.py": b"# not needed\n",
        "vendor/llama.cpp/conversion/lfm2.py": b"# lfm2\n",
        "vendor/llama.cpp/gguf-py/gguf/__init__.py": b"",
        "vendor/llama.cpp/models/templates/x.jinja": b"{{ x }}",
        "vendor/llama.cpp/models/ggml-vocab-big.gguf": b"big",
        "vendor/llama.cpp/src/llama.cpp": b"// c++",
        "llama_cpp/llama.py": b"# bindings",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _pip_writing_sdist(calls: list[list[str]], *, lora: bool = True) -> Any:
    def fake_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        version = next(a for a in cmd if a.startswith("llama-cpp-python==")).partition("==")[2]
        sdist = Path(cmd[cmd.index("-d") + 1]) / f"llama_cpp_python-{version}.tar.gz"
        _fake_sdist(sdist, version, lora=lora)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return fake_pip


def test_fetch_downloads_the_sdist_and_keeps_only_the_converter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(converter.subprocess, "run", _pip_writing_sdist(calls))
    dest = fetch_converter(tmp_path / "llama.cpp", version="9.9.9")

    assert "llama-cpp-python==9.9.9" in calls[0] and ":all:" in calls[0]
    kept = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert kept == [
        STAMP,
        "conversion/lfm2.py",
        "convert_hf_to_gguf.py",
        "convert_lora_to_gguf.py",
        "gguf-py/gguf/__init__.py",
        "models/templates/x.jinja",
    ]
    assert (dest / STAMP).read_text().strip() == "9.9.9"
    assert not list(tmp_path.glob(".staging-*"))


def test_a_fetch_from_before_the_lora_converter_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older venv's converter dir has the right version stamp but no convert_lora_to_gguf.py:
    `make install` fetches again instead of calling it up to date."""
    old = tmp_path / "llama.cpp"
    old.mkdir()
    (old / SCRIPT).write_text("# converter\n")
    (old / STAMP).write_text(installed_version() + "\n")
    monkeypatch.setenv(converter.ENV_VAR, str(old))
    with pytest.raises(ConverterNotFoundError, match=LORA_SCRIPT):
        converter_dir(LORA_SCRIPT)

    calls: list[list[str]] = []
    monkeypatch.setattr(converter.subprocess, "run", _pip_writing_sdist(calls))
    assert fetch_converter(old) == old
    assert len(calls) == 1 and (old / LORA_SCRIPT).read_text() == "# lora converter\n"
    assert converter_dir(LORA_SCRIPT) == old


def test_an_sdist_without_the_lora_converter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(converter.subprocess, "run", _pip_writing_sdist([], lora=False))
    with pytest.raises(RuntimeError, match=LORA_SCRIPT):
        fetch_converter(tmp_path / "llama.cpp", version="9.9.9")
    assert not (tmp_path / "llama.cpp").exists() and not list(tmp_path.glob(".staging-*"))


def test_failed_download_raises_with_pips_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(converter.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="No matching distribution"):
        fetch_converter(tmp_path / "llama.cpp", version="9.9.9")
    assert not (tmp_path / "llama.cpp").exists()


def test_cli_path_prints_the_converter_dir(llama_cpp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    converter.main(["path"])
    assert capsys.readouterr().out.strip() == str(llama_cpp_dir)
