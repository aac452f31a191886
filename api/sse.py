"""Server-Sent Events over HTTP: whether a request asks for a stream, and the response that carries
one (the frames come from services/event_streams.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

MEDIA_TYPE = "text/event-stream"
# no-cache: every GET is live, never a stored copy; X-Accel-Buffering: nginx would otherwise hold
# the frames back until its buffer fills, which for a quiet job is never.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def wants_event_stream(accept: str | None) -> bool:
    """True when the Accept header names text/event-stream (EventSource sends exactly that)."""
    media = (part.split(";")[0].strip().lower() for part in (accept or "").split(","))
    return MEDIA_TYPE in media


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(frames, media_type=MEDIA_TYPE, headers=HEADERS)


def openapi_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 as OpenAPI describes it: a text/event-stream body (beside the JSON one, if any)."""
    return {200: {"description": description, "content": {MEDIA_TYPE: {"schema": {"type": "string"}}}}}
