"""A scriptable OpenAI-compatible chat server on 127.0.0.1 (http.server in a thread) for failure tests.

`FakeTeacher(script)` calls `script(n, payload)` for the n-th request (0-based) and sends the `Reply`
it returns. It records every request's arrival time and payload, and how many were in flight at once.
A reply can be an error status with Retry-After, a delay (timeouts), garbage (malformed JSON) or a
dropped connection.

`task_script` answers every prompt of synth/prompts.py like a competent teacher would, with planted
faults (omitted values, echoed scaffolds, copied seeds, duplicates, short lists), so pipeline tests
can assert exact drop reasons.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering (a crashed or reset upstream)


def chat(content: str, prompt_tokens: int = 10, completion_tokens: int = 5, **kw: Any) -> Reply:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, **kw)


Script = Callable[[int, dict[str, Any]], Reply]


@dataclass
class Seen:
    at: float  # time.monotonic() on arrival
    payload: dict[str, Any]
    headers: dict[str, str]


class FakeTeacher:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.seen)

    def __enter__(self) -> FakeTeacher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, payload: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            n = len(self.seen)
            self.seen.append(Seen(time.monotonic(), payload, headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.script(n, payload)
            time.sleep(reply.delay_s)
            return reply
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = fake._handle(json.loads(raw or b"{}"), dict(self.headers))
                if reply.drop:
                    self.close_connection = True
                    return
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: expected in the timeout test

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

        return Handler


WORDS = [a + b for a in "bcdfghjklmnpqrstvwz" for b in ("ar", "el", "on", "ix", "um", "ot", "ap")]


def words(seed: int, n: int = 8) -> str:
    """n pseudo-words, unique per seed: texts that never collide by accident."""
    import random

    return " ".join(random.Random(seed).sample(WORDS, n))


def _mentioned(prompt: str) -> list[str]:
    """The values a prompt asks the text to state: "(city: Oslo, days: 3)" or "mention city: Oslo."."""
    found = re.search(r"\(([^()]*: [^()]*)\)\.", prompt) or re.search(
        r"must mention (.*?: .*?)\.(?: |$)", prompt
    )
    if not found:
        return []
    return [part.split(": ", 1)[1] for part in found.group(1).split(", ") if ": " in part]


def task_script(n: int, payload: dict[str, Any]) -> Reply:
    """A teacher for every template in synth/prompts.py. Faults, by request seed: % 5 == 0 leaves
    a value out (value_not_in_text), % 7 == 0 echoes the scaffold (scaffold_echo), % 11 == 0 repeats
    a fixed text (duplicate); the judge gives 2 to answers whose seed is odd."""
    prompt = payload["messages"][-1]["content"]
    seed = int(payload.get("seed", n))
    if prompt.startswith("Task:") and "topics of this task" in prompt:
        return chat("1. Planning\n2. Money matters\n3. Travel days")
    if topic := re.search(r'sub-topics of "(.+?)"', prompt):
        return chat(
            "\n".join(f"{i}. {topic.group(1)} case {w}" for i, w in enumerate(["one", "two", "three"]))
        )
    if listed := re.search(r"Write (\d+) more (\w+) texts like these", prompt):
        # a list like the seeds: a preamble line, numbered items, the last one the same in every
        # list (duplicate); % 3 == 0 copies the first seed as its first item (seed_copy), % 4 == 0
        # gives one item fewer than asked (unanswered)
        n = int(listed.group(1)) - (seed % 4 == 0)
        items = [f"{words(seed * 10 + i).capitalize()}, truly." for i in range(n)]
        if seed % 3 == 0 and items:
            items[0] = prompt.split("\n- ")[1].split("\n")[0]
        if len(items) > 1:
            # the same in every list of this label (duplicate), without naming it (label_leak)
            items[-1] = f"The same {words(sum(map(ord, listed.group(2))), 3)} comes back in every list."
        return chat("Here are more:\n" + "\n".join(f"{i + 1}. {t}" for i, t in enumerate(items)))
    if "examples of" in prompt:
        return chat("\n".join(f"- {w.capitalize()}" for w in words(seed, 6).split()))
    if "Rate the assistant" in prompt:
        return chat("Rating: 2" if seed % 2 else "Rating: 4", 40, 2)
    if seed % 11 == 0:
        return chat("This exact request text comes back again and again.")
    values = _mentioned(prompt)
    if values:
        if seed % 7 == 0:
            return chat(
                "Sure: " + prompt[prompt.index("(") + 1 : prompt.index(")")] if "(" in prompt else prompt
            )
        kept = values[1:] if seed % 5 == 0 else values
        return chat(f"Please help me with {' and '.join(kept)} because {words(seed)}.")
    if label := re.search(r"Write a (\w+) one about", prompt):
        return chat(f'"{words(seed).capitalize()}, truly {"fine" if label else ""}."')
    if "question or request" in prompt:
        return chat(f"How do I {words(seed)}?")
    return chat(f"Answer: you {words(seed)}.\n\nThen you are done.", 20, 30)
