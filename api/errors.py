"""Every error leaves the API in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Bad input is a 4xx naming the field (a malformed path id is a 404), a dependency that is down is a
503 with Retry-After, and anything unexpected a 500 with a generic message (the traceback goes to
the log, never to the client: it could name internal addresses). The input guard below holds every
request to the limits in domain.job_config before a route sees it.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.job_config import (
    MAX_ID_LENGTH,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_QUERY_VALUE_LENGTH,
    json_depth_exceeds,
)
from infra.settings import get_settings
from services.errors import EdgetuneError

log = logging.getLogger("edgetune.api")

DB_RETRY_AFTER_S = 5  # Retry-After of a request answered 503 because the database is unreachable
DB_DOWN = "The database is unavailable; nothing was changed. Retry later."
INTERNAL = "The server had an error while processing your request; it has been logged."
# Errors that mean "could not reach / lost the database", not "this request is wrong".
_DB_DOWN_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # the pool's checkout timeout
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def _body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param(loc: tuple[object, ...], body: Any = None) -> str:
    # ("body", "method", "supervised", "n_epochs") -> "method.supervised.n_epochs"
    parts: list[str] = []
    node = body
    for p in loc:
        if p in ("body", "query", "header", "path", "form"):
            continue
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
            node = node[p]
        elif _union_tag(p):
            continue  # pydantic names the union member it tried: not a key the customer sent
        else:
            node = None
        parts.append(str(p))
    return ".".join(parts) or str(loc[-1] if loc else "")


def _union_tag(part: object) -> bool:
    """How pydantic names a union's members in a location: "constrained-str", "TargetSpec"."""
    return isinstance(part, str) and (part[:1].isupper() or "-" in part or "[" in part)


# An error that only says the input was not of one union member's type ("Input should be a valid
# string" for an object): where the input's own member has an error under the same field, that one
# names what to fix.
_TYPE_MISMATCH = frozenset({"string_type", "model_type", "model_attributes_type", "dict_type", "list_type"})


def _telling(errors: list[Any], body: Any) -> Any:
    """The error `param` names: the first, unless it is a union member's type mismatch and another
    error lies under the same field."""
    if not errors:
        return {"loc": (), "msg": "invalid request"}
    first = errors[0]
    if first.get("type") not in _TYPE_MISMATCH:
        return first
    field = _param(tuple(first.get("loc", ())), body)
    deeper = (e for e in errors[1:] if _param(tuple(e.get("loc", ())), body).startswith(field + "."))
    return next(deeper, first)


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


class InputGuard:
    """Pure ASGI middleware: path ids, query values and JSON bodies within the limits, else the
    error shape (404 for a malformed path id, 400 naming the query parameter, 400/413 for a body)
    before any route, database or parser sees them."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app, self.api = app, api
        self._compiled: list[re.Pattern[str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._check_path(scope) or self._check_query(scope)
        if refused is None and _json_content(scope):
            body, refused = await _read_json_body(receive)
            if refused is None:
                receive = _replay(body, receive)
        elif refused is None and _has_body(scope):  # an upload: streamed, counted as it arrives
            refused = _declared_too_large(scope)
            if refused is None:
                await _capped(self.app, scope, receive, send)
                return
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _templates(self) -> list[re.Pattern[str]]:
        # The routes' path templates, from the OpenAPI document (public, and built once routers are
        # included): "/v1/files/{file_id}" -> ^/v1/files/(?P<file_id>[^/]+)$
        if self._compiled is None:
            compiled = []
            for template in self.api.openapi().get("paths", {}):
                parts = re.split(r"\{(\w+)(?::\w+)?\}", template)
                regex = "".join(
                    re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts)
                )
                compiled.append(re.compile(f"^{regex}$"))
            self._compiled = compiled
        return self._compiled

    def _check_path(self, scope: Scope) -> JSONResponse | None:
        path = scope.get("path", "")
        for pattern in self._templates():
            if m := pattern.match(path):
                params = m.groupdict().items()
                break
        else:
            params = {"path": path}.items() if _has_control(path) else {}.items()
        for name, text in params:
            too_long = len(text) > MAX_ID_LENGTH or (text.isdigit() and len(text) > MAX_INT_DIGITS)
            if too_long or _has_control(text):
                return JSONResponse(
                    _body(f"No such {name}: the id is malformed", "not_found_error", name, "not_found"),
                    status_code=404,
                )
        return None

    def _check_query(self, scope: Scope) -> JSONResponse | None:
        query = scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(query, keep_blank_values=True):
            problem = None
            if len(value) > MAX_QUERY_VALUE_LENGTH or len(key) > MAX_QUERY_VALUE_LENGTH:
                problem = f"at most {MAX_QUERY_VALUE_LENGTH} characters"
            elif _has_control(value) or _has_control(key):
                problem = "control characters (such as NUL) are not allowed"
            if problem:
                param = key[:64] if not _has_control(key) else "query"
                return JSONResponse(
                    _body(f"{param}: {problem}", "invalid_request_error", param, "invalid_value"),
                    status_code=400,
                )
        return None


def _json_content(scope: Scope) -> bool:
    """A body FastAPI would parse as JSON: a JSON content type, or none at all (multipart
    uploads and form bodies are left alone)."""
    if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return False
    for key, value in scope.get("headers") or []:
        if key == b"content-type":
            ctype = value.decode("latin-1").split(";")[0].strip().lower()
            return ctype == "application/json" or ctype.endswith("+json")
    return True


# A multipart body carries the file plus its boundaries and the form's other fields.
MULTIPART_SLACK = 64 * 1024


def _has_body(scope: Scope) -> bool:
    return scope.get("method") in ("POST", "PUT", "PATCH")


def _upload_limit() -> int:
    return get_settings().max_upload_bytes + MULTIPART_SLACK


def _too_large() -> JSONResponse:
    limit = get_settings().max_upload_bytes  # what the customer can act on, not the slack
    return JSONResponse(
        _body(
            f"the upload is over the {limit}-byte limit", "invalid_request_error", "file", "file_too_large"
        ),
        status_code=413,
        headers={"Connection": "close"},
    )


def _declared_too_large(scope: Scope) -> JSONResponse | None:
    """A Content-Length over the cap is refused before one byte of the body is read."""
    for key, value in scope.get("headers") or []:
        if key == b"content-length" and value.isdigit() and int(value) > _upload_limit():
            return _too_large()
    return None


async def _capped(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app` on a body counted as it arrives (chunked, or a Content-Length that lies): past the
    cap the app is told the client left and gets no more bytes, its own answer to that is dropped,
    and the 413 goes out instead. Memory and disk stay bounded by the cap."""
    limit, seen, over, started = _upload_limit(), 0, False, False

    async def counted() -> Message:
        nonlocal seen, over
        if over:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                return {"type": "http.disconnect"}
        return message

    async def guarded(message: Message) -> None:
        nonlocal started
        if over:
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counted, guarded)
    except Exception:
        if not over:
            raise
    if over and not started:
        await _too_large()(scope, receive, send)


async def _read_json_body(receive: Receive) -> tuple[bytes, JSONResponse | None]:
    # The upload cap: the upload_training_file tool carries a file's JSONL as a JSON string.
    limit = get_settings().max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", JSONResponse(
                _body(
                    f"the JSON body is over the {limit}-byte limit",
                    "invalid_request_error",
                    "body",
                    "body_too_large",
                ),
                status_code=413,
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    # A large body is scanned off the event loop (other requests keep their latency).
    small = len(body) < 1024 * 1024
    deep = json_depth_exceeds(body) if small else await anyio.to_thread.run_sync(json_depth_exceeds, body)
    if deep:
        return body, JSONResponse(
            _body(
                f"the JSON body nests objects/arrays deeper than {MAX_JSON_DEPTH} levels",
                "invalid_request_error",
                "body",
                "too_deep",
            ),
            status_code=400,
        )
    return body, None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _db_down(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _DB_DOWN_ERRORS) or isinstance(e, ConnectionError):
            return True
        e = e.__cause__ or e.__context__
    return False


def db_unavailable_response() -> JSONResponse:
    return JSONResponse(
        _body(DB_DOWN, "service_unavailable_error", None, "database_unavailable"),
        status_code=503,
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(InputGuard, api=app)

    @app.exception_handler(EdgetuneError)
    async def _edgetune(_: Request, exc: EdgetuneError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors, body = list(exc.errors()), exc.body
        param = _param(tuple(_telling(errors, body).get("loc", ())), body)
        message = "; ".join(f"{_param(tuple(e.get('loc', ())), body)}: {e.get('msg')}" for e in errors[:10])
        return JSONResponse(_body(message, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            _body(str(exc.detail), type_), status_code=exc.status_code, headers=exc.headers or None
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if _db_down(exc):
            log.warning(
                "database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
            )
            return db_unavailable_response()
        if isinstance(exc, sa_exc.DataError):
            # A value the database cannot hold (a NUL, a number out of range) that no rule caught first.
            log.warning("database refused a value on %s %s: %s", request.method, request.url.path, exc)
            message = "a value in the request cannot be stored (a NUL character or a number out of range)"
            return JSONResponse(
                _body(message, "invalid_request_error", None, "invalid_value"), status_code=400
            )
        return _internal(request, exc)

    for db_error in (sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError, psycopg.Error):
        app.add_exception_handler(db_error, _database)

    @app.exception_handler(RecursionError)
    async def _recursion(request: Request, _: RecursionError) -> JSONResponse:
        log.warning("RecursionError on %s %s", request.method, request.url.path)
        message = f"the request nests values too deeply (at most {MAX_JSON_DEPTH} levels)"
        return JSONResponse(_body(message, "invalid_request_error", "body", "too_deep"), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if _db_down(exc):  # e.g. a connection error wrapped by another library
            return db_unavailable_response()
        return _internal(request, exc)


def _internal(request: Request, exc: BaseException) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(_body(INTERNAL, "server_error", None, "internal_error"), status_code=500)
