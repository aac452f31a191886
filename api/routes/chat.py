from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Generator
from functools import partial
from weakref import WeakKeyDictionary

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import HeavyOrg, SessionDep
from api.sse import event_stream, openapi_responses
from services import chat_completions as svc
from services.errors import EdgetuneError
from services.schemas.chat import ChatCompletionChunkPublic, ChatCompletionCreate, ChatCompletionPublic

router = APIRouter(tags=["chat"])

# Threads that may generate at once, apart from the threadpool every sync route shares: requests
# waiting for a busy model wait here, in the event loop, instead of holding the API's threads.
GENERATION_THREADS = 8
DISCONNECT_POLL_S = 0.25  # how often a non-streamed request checks that its client is still there
_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    # one per event loop: a limiter belongs to the loop it was first used in
    return _limiters.setdefault(asyncio.get_running_loop(), anyio.CapacityLimiter(GENERATION_THREADS))


@router.post(
    "/chat/completions",
    response_model=ChatCompletionPublic,
    responses=openapi_responses("A chat.completion (JSON), or with stream=true chat.completion.chunk events"),
)
async def create_chat_completion(
    request: Request, session: SessionDep, org: HeavyOrg, body: ChatCompletionCreate
) -> ChatCompletionPublic | StreamingResponse:
    """OpenAI's chat completion, answered by one of the org's fine-tuned GGUFs in llama.cpp.

    Generation is blocking CPU work and runs in worker threads, never on the event loop. A stream's
    first chunk is made before the response starts, so a refusal (a prompt over the context) is
    still an HTTP error; the rest is generated one token per thread step as the client reads."""
    served = await anyio.to_thread.run_sync(partial(svc.prepare, session=session, org=org, body=body))
    if not body.stream:
        return await _complete_while_connected(request, partial(svc.complete, served, body, org.id))
    chunks = svc.stream(served, body, org.id)
    first = await anyio.to_thread.run_sync(next, chunks, limiter=_limiter())
    return event_stream(_frames(first, chunks))


async def _complete_while_connected(
    request: Request, complete: Callable[..., ChatCompletionPublic]
) -> ChatCompletionPublic:
    """Generate in a thread while watching the connection: a client that leaves stops generation
    at the next token (nothing would receive the answer)."""
    left = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(DISCONNECT_POLL_S)
        left.set()

    watcher = asyncio.ensure_future(watch())  # a bare task: a task group would wrap the 4xx errors
    try:
        return await anyio.to_thread.run_sync(partial(complete, left=left.is_set), limiter=_limiter())
    finally:
        watcher.cancel()


def _frame(chunk: ChatCompletionChunkPublic) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


async def _frames(
    first: ChatCompletionChunkPublic, chunks: Generator[ChatCompletionChunkPublic, None, None]
) -> AsyncIterator[str]:
    """OpenAI's stream: `data: {chunk}` frames, then `data: [DONE]`. When the client leaves, the
    response is cancelled between tokens and the generator is closed, which stops generation and
    bills what was generated."""
    try:
        yield _frame(first)
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None, limiter=_limiter())) is not None:
            yield _frame(chunk)
        yield "data: [DONE]\n\n"
    except EdgetuneError as e:  # after the first frame no status can change: the error is a frame
        yield f"data: {json.dumps(e.body())}\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(chunks.close)
