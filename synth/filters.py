"""Cleaning and de-duplication of teacher outputs: cheap rules in the NeMo Curator order
(clean → heuristics → exact dedup → near dedup). Each drop has a reason string, counted in the report.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

MIN_WORDS = 4
MAX_TEXT_CHARS = 600
MAX_ANSWER_CHARS = 2000
NEAR_DUP_JACCARD = 0.8  # word-3-gram Jaccard; distilabel uses 0.9 with MinHash, we are stricter
SHINGLE = 3

# A weak teacher often announces its answer ("Sure! Here is a short review:") or labels it.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[^\n]*?[.!:\n]\s*)?"
    r"(?:here(?:'s| is| are)\b[^\n]*?:\s*)?",
    re.IGNORECASE,
)
# "Review: ...", or the prompt's scaffold echoed back ("Task: ... Question: Can you ...").
_FIELD = re.compile(
    r"\b(?:example(?: text)?|text|input|review|message|question|request|answer|output)\s*\d*\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"
# Talk about the task instead of a text for it ("The text is an example of a positive review").
_TASK_TALK = re.compile(
    r"\b(?:example|label(?:l?ed)?|classif\w*|sentiment"
    r"|(?:the|this) (?:\w+ )?(?:text|sentence|review|message|post) (?:is|has|was|above|below|described))\b",
    re.IGNORECASE,
)
# The teacher answering as a chat assistant instead of writing the text it was asked for.
_ASSISTANT_TALK = re.compile(
    r"\b(?:as an ai|language model|(?:an?|helpful|friendly) ai|i can(?:not|'t) (?:help|assist|write)"
    r"|i'?m (?:ready|here|happy) to (?:help|assist)|how can i (?:help|assist)|question or request)\b",
    re.IGNORECASE,
)
# Labels so common in ordinary text that finding them is no evidence of an echoed label.
_COMMON_WORD_LABELS = {"yes", "no", "other", "none", "true", "false", "ok", "maybe", "unknown"}


def normalize(text: str) -> str:
    """Lower-case words only: the key for exact de-duplication."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        return text[1:-1].strip()
    # 'Here you go: "The blender broke." Hope this helps' -> the quoted part.
    if (m := re.search(r"[\"“]([^\"“”]{20,})[\"”]", text)) and len(m.group(1)) > len(text) / 2:
        return m.group(1).strip()
    return text.strip(_QUOTES + " ")


def _drop_partial_sentence(text: str) -> str:
    """Cut a completion that hit max_tokens back to its last full sentence, when there is one."""
    if text.endswith((".", "!", "?", '"', "”", ")")):
        return text
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    return text[: cut + 1] if cut > 0 else text


def clean_text(raw: str) -> str:
    """One paragraph of plain text: no preamble, field prefix, surrounding quotes or broken tail."""
    text = _PREAMBLE.sub("", raw.strip(), count=1)
    after_field = _FIELD.split(text)[-1]
    if len(after_field.split()) >= MIN_WORDS:
        text = after_field
    # The first paragraph that is more than a greeting ("Hey guys,") is the text.
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()] or [""]
    first = next((p for p in paragraphs if len(p.split()) >= MIN_WORDS), paragraphs[0])
    text = _unquote(" ".join(first.split()))
    return _drop_partial_sentence(text)


def clean_answer(raw: str) -> str:
    """An answer keeps its paragraphs (lists, steps); only an "Answer:" prefix and a broken tail go."""
    text = re.sub(r"^\s*answer\s*:\s*", "", raw.strip(), flags=re.IGNORECASE)
    text = re.sub(r"\n\s*(?:\d+[.)]|[-*•])\s*$", "", text)  # a list cut off at its first marker
    return _drop_partial_sentence(text.strip())


def label_leak(text: str, labels: list[str]) -> bool:
    """True if the text names a label: the model would learn to copy the word, not the task."""
    for label in labels:
        if label.lower() in _COMMON_WORD_LABELS:
            continue
        if re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text, re.IGNORECASE):
            return True
    return False


def split_label_prefix(text: str, labels: list[str]) -> tuple[str, str | None]:
    """("rest", label) when the text opens with "<label>: ..." (a common small-teacher habit), else
    (text, None). The caller keeps the rest only when that label is the one it asked for."""
    for label in labels:
        if m := re.match(rf"\s*{re.escape(label)}\s*[:\-–]\s*", text, re.IGNORECASE):
            return text[m.end() :], label
    return text, None


def text_problem(
    text: str, labels: list[str] | None = None, max_chars: int = MAX_TEXT_CHARS, meta: bool = True
) -> str | None:
    """Why a cleaned input text is unusable, or None. `meta=False` for user requests, where
    "give me an example of ..." is a fine request, not talk about the task (assistant talk is
    still dropped)."""
    if not text.strip():
        return "empty"
    if len(text.split()) < MIN_WORDS:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if labels and label_leak(text, labels):
        return "label_leak"
    if (meta and _TASK_TALK.search(text)) or _ASSISTANT_TALK.search(text):
        return "meta"
    return None


def shingles(text: str) -> set[str]:
    words = normalize(text).split()
    if len(words) < SHINGLE:
        return {" ".join(words)}
    return {" ".join(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


class DedupIndex:
    """Exact (normalised text) and near (shingle Jaccard) duplicate detection over kept texts.

    An inverted index from shingle to kept texts means each check only compares against texts that
    share at least one shingle: fast enough for thousands of rows without MinHash.
    """

    def __init__(self, threshold: float = NEAR_DUP_JACCARD) -> None:
        self.threshold = threshold
        self._exact: set[str] = set()
        self._sizes: list[int] = []
        self._postings: dict[str, list[int]] = defaultdict(list)

    def check(self, text: str) -> str | None:
        """'duplicate', 'near_duplicate' or None (new)."""
        if normalize(text) in self._exact:
            return "duplicate"
        grams = shingles(text)
        shared = Counter(i for g in grams for i in self._postings.get(g, ()))
        for i, n in shared.items():
            if n / (len(grams) + self._sizes[i] - n) >= self.threshold:
                return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        grams = shingles(text)
        self._exact.add(normalize(text))
        for g in grams:
            self._postings[g].append(len(self._sizes))
        self._sizes.append(len(grams))
