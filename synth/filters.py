"""Cleaning and de-duplication of teacher outputs: cheap rules in the NeMo Curator order
(clean → heuristics → exact dedup → near dedup). Each drop has a reason string, counted in the report.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict

import numpy as np

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
    r"|(?:the|this) (?:\w+ )?(?:text|sentence|review|message|post) (?:is|has|was|above|below|described)"
    # the teacher talking about the writing instead of writing (seen from the bundled 135M on the
    # routing task: "In a formal tone:", "Rewrite the previous message.", "Your text is already
    # great.", "Here's a different one: ...")
    r"|in an? (?:\w+ )?tone|rewrite|rephrase|(?:previous|above) (?:text|message)"
    r"|your (?:text|message) is|here(?:'s| is) (?:a|another) (?:different|new|revised) (?:one|version))\b",
    re.IGNORECASE,
)
# The teacher answering as a chat assistant instead of writing the text it was asked for.
_ASSISTANT_TALK = re.compile(
    r"\b(?:as an ai|language model|(?:an?|helpful|friendly) ai|i can(?:not|'t) (?:help|assist|write)"
    r"|i'?m (?:ready|here|happy) to (?:help|assist)|how can i (?:help|assist)|question or request"
    r"|chatbot|(?:support|customer service) (?:ai|bot|assistant))\b",
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
    text = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s+", "", text)  # "1. The phone..." (one item of a list)
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
    """Exact (normalised text) and near (word-3-gram Jaccard) duplicate detection over kept texts.

    Near duplicates are found with MinHash LSH: each text's 128 MinHash values are cut into 32
    bands of 4, and only texts sharing a whole band with the new one are compared. Two texts with
    shingle Jaccard J share a band with probability 1 - (1 - J^4)^32: 1.00 at J = 0.8, 0.98 at 0.6,
    0.56 at 0.4, so every pair at the 0.8 threshold is a candidate while unrelated texts (J < 0.2,
    p < 0.05) are rarely compared. Candidates are then checked on their exact Jaccard, so the
    answer is the exact one, not a MinHash estimate. Hand-written (numpy, ~30 lines) rather than
    `datasketch`: the index is small and in memory, and the exact check is ours anyway.
    """

    def __init__(self, threshold: float = NEAR_DUP_JACCARD) -> None:
        self.threshold = threshold
        self._exact: set[str] = set()
        self._grams: list[set[str]] = []
        self._buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)

    def check(self, text: str) -> str | None:
        """'duplicate', 'near_duplicate' or None (new)."""
        if normalize(text) in self._exact:
            return "duplicate"
        grams = shingles(text)
        for i in self._candidates(grams):
            other = self._grams[i]
            if len(grams & other) / len(grams | other) >= self.threshold:
                return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        grams = shingles(text)
        self._exact.add(normalize(text))
        for key in _band_keys(grams):
            self._buckets[key].append(len(self._grams))
        self._grams.append(grams)

    def __len__(self) -> int:
        return len(self._grams)

    def _candidates(self, grams: set[str]) -> set[int]:
        return {i for key in _band_keys(grams) for i in self._buckets.get(key, ())}


NUM_PERM, BANDS = 128, 32
_PRIME = (1 << 61) - 1
# Fixed hash functions h(x) = (a*x + b) mod p: the same text always gets the same signature.
# With x and a below 2**32, a*x + b stays below 2**64 and cannot overflow uint64.
_perm_rng = random.Random(20240611)
_A = np.array([_perm_rng.randrange(1, 1 << 32) for _ in range(NUM_PERM)], dtype=np.uint64)
_B = np.array([_perm_rng.randrange(0, 1 << 32) for _ in range(NUM_PERM)], dtype=np.uint64)


def minhash(grams: set[str]) -> np.ndarray:
    """The 128 MinHash values of a shingle set (each shingle hashed to 32 bits with blake2b)."""
    x = np.array(
        [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") for g in grams],
        dtype=np.uint64,
    )
    return ((np.outer(x, _A) + _B) % np.uint64(_PRIME)).min(axis=0)  # type: ignore[no-any-return]


def _band_keys(grams: set[str]) -> list[tuple[int, bytes]]:
    bands = minhash(grams).reshape(BANDS, NUM_PERM // BANDS)
    return [(b, band.tobytes()) for b, band in enumerate(bands)]


_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.):-]|[-*•]+)\s*")


def list_items(text: str) -> list[str]:
    """The items of a listed answer, markers removed: when some lines are numbered or bulleted,
    only those (a weak teacher wraps its list in "Here are five more:" and comments), else every
    non-empty line. Each item is then cleaned and judged as one text (clean_text, text_problem)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if marked := [line for line in lines if _LIST_MARKER.match(line)]:
        lines = marked
    return [_LIST_MARKER.sub("", line).strip() for line in lines]
