"""How llama-cpp-python's chat completion renders and tokenizes a GGUF's prompt, reproduced so the
eval runner can count a prompt's tokens before running it and the parity tests can compare it with
transformers' rendering."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Tools = list[dict[str, Any]] | None


def gguf_formatter(llm: Any, *, generation: bool = True) -> Any:
    """The Jinja2 formatter llama-cpp-python's `create_chat_completion` uses for this GGUF.

    Built as `Llama.__init__` builds it (template from `tokenizer.chat_template`, BOS/EOS text from
    the GGUF's own token ids), so it renders what the runtime renders. Raises when the runtime would
    not use the embedded template (no template, or one llama-cpp-python swaps for a built-in).
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    if llm.chat_format != "chat_template.default":
        raise ValueError(
            f"llama-cpp-python formats this GGUF's chats with {llm.chat_format!r}, not its embedded template"
        )
    bos, eos = llm.token_bos(), llm.token_eos()
    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        add_generation_prompt=generation,
        stop_token_ids=[eos],
    )


def render_gguf(llm: Any, messages: list[Message], tools: Tools = None, *, generation: bool = True) -> str:
    """The prompt llama-cpp-python's chat completion builds from the GGUF's embedded template."""
    return str(gguf_formatter(llm, generation=generation)(messages=messages, tools=tools).prompt)


def tokenize_gguf(llm: Any, text: str) -> list[int]:
    # As llama-cpp-python's chat handler does: special tokens parsed, no BOS added (the Jinja
    # formatter reports that the template writes its own).
    return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)]
