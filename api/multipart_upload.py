"""A multipart/form-data upload parsed off the event loop.

Starlette parses a multipart body on the event loop as it arrives: for a 200 MB upload that is
seconds of CPU on the loop. Here the loop only receives the body (the upload cap counted as it
goes) and gathers it into FEED_BYTES batches; each batch is parsed by python-multipart in a worker
thread, which writes the `file` part to a temporary file and keeps the other form fields (a few
bytes: `purpose`) in memory under a small cap. No disk write happens on the loop, memory holds one
batch, and the body is never written to disk whole besides its file part. The caller owns the
directory the file lives in and removes it (`upload_dir`).

Kept out of services/files.py: this is the HTTP body's format, not a rule about training files.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import MULTIPART_SLACK
from infra.settings import get_settings
from services.errors import InvalidRequest, PayloadTooLarge
from services.schemas.files import PURPOSES

FIELDS_MAX_BYTES = 64 * 1024  # the form's other fields (names and values) held in memory, at most
# Received bytes handed to the parser thread at a time: one thread hop per MB, one MB held.
FEED_BYTES = 1024 * 1024

# The requestBody the route no longer declares in its signature (it reads the body itself):
# clients and SDK generators (the openai SDK's files.create) see the same form as before.
OPENAPI_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "description": "The JSONL training file (*.jsonl).",
                        },
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                    "required": ["file", "purpose"],
                }
            }
        },
    }
}


@dataclass
class Upload:
    """A parsed form: its text fields, and its `file` part on disk (None when there was none)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    filename: str | None = None

    def required(self, name: str) -> str:
        if name not in self.fields:
            raise InvalidRequest(f"{name}: Field required", param=name, code="invalid_value")
        return self.fields[name]

    def required_file(self) -> Path:
        if self.file is None:
            raise InvalidRequest("file: Field required", param="file", code="invalid_value")
        return self.file


@asynccontextmanager
async def upload_dir() -> AsyncIterator[Path]:
    """A temporary directory for one upload, removed afterwards however the request ends (an error,
    the client leaving, the task cancelled): the removal is shielded and runs in a thread, since
    unlinking a file of hundreds of MB is not free."""
    path = Path(tempfile.mkdtemp(prefix="upload-"))
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)


async def receive_upload(request: Request, tmp: Path) -> Upload:
    """The request's multipart form, its `file` part written to `tmp`/file. The body is received on
    the loop and handed to the parser in FEED_BYTES batches, each parsed in a worker thread.
    A malformed or unfinished body is a 400 naming `file`, one over the cap a 413."""
    boundary = _boundary(request.headers.get("content-type"))  # refused before a byte is read
    limit, size, batch = get_settings().max_upload_bytes + MULTIPART_SLACK, 0, bytearray()
    with (tmp / "file").open("wb") as out:
        form = _Form(out, tmp / "file")
        parser = _parser(boundary, form)
        try:
            async for chunk in request.stream():
                # api/errors.InputGuard already cuts a body off at the cap; counting here too
                # keeps the route bounded on its own
                size += len(chunk)
                if size > limit:
                    message = f"the upload is over the {get_settings().max_upload_bytes}-byte limit"
                    raise PayloadTooLarge(message, param="file", code="file_too_large")
                batch += chunk
                if len(batch) >= FEED_BYTES:
                    await anyio.to_thread.run_sync(feed, parser, bytes(batch))
                    batch.clear()
        except ClientDisconnect:
            # The client left (or InputGuard cut the body off at the cap and answers 413 itself):
            # nobody reads this answer, and it is not a server error.
            raise InvalidRequest("the upload ended before its body was complete", param="file") from None
        await anyio.to_thread.run_sync(feed, parser, bytes(batch), True)
    return form.finished()


def _boundary(content_type: str | None) -> bytes:
    ctype, options = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidRequest(
            "the body must be multipart/form-data (with a boundary) holding `file` and `purpose`",
            param="file",
            code="invalid_content_type",
        )
    return options[b"boundary"]


def _malformed(exc: FormParserError) -> InvalidRequest:
    return InvalidRequest(f"the multipart body is malformed: {exc}", param="file", code="invalid_multipart")


def _parser(boundary: bytes, form: _Form) -> MultipartParser:
    try:
        return MultipartParser(boundary, form.callbacks())  # refuses a boundary over 256 bytes
    except FormParserError as exc:
        raise _malformed(exc) from None


def feed(parser: MultipartParser, data: bytes, last: bool = False) -> None:
    """Parse the next `data` of the body (the file part's bytes written as they are found); `last`:
    the body ends here. Blocking: called in a worker thread."""
    try:
        parser.write(data)
        if last:
            parser.finalize()
    except FormParserError as exc:
        raise _malformed(exc) from None


class _Form:
    """python-multipart's callbacks, building an `Upload`: the `file` part's bytes go to `out`."""

    def __init__(self, out: BinaryIO, file_path: Path) -> None:
        self.out, self.file_path = out, file_path
        self.upload, self.ended = Upload(), False
        self.header_name, self.header_value, self.disposition = b"", b"", b""
        self.name: str | None = None
        self.value = bytearray()
        self.held = 0  # bytes of field names and values kept so far

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._header(name=data[start:end]),
            "on_header_value": lambda data, start, end: self._header(value=data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.disposition, self.name, self.value = b"", None, bytearray()

    def _header(self, name: bytes = b"", value: bytes = b"") -> None:
        self.header_name += name  # python-multipart caps a header's size and count per part
        self.header_value += value

    def header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise InvalidRequest(
                "a multipart part has no name (Content-Disposition)", param="file", code="invalid_multipart"
            )
        self.name = options[b"name"].decode("utf-8", errors="replace")
        if self.name == "file":
            if self.upload.file is not None:
                raise InvalidRequest(
                    "the form holds more than one `file`", param="file", code="invalid_multipart"
                )
            self.upload.file = self.file_path
            filename = options.get(b"filename")
            self.upload.filename = filename.decode("utf-8", errors="replace") if filename else None
        else:
            self._hold(len(self.name))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name == "file":
            self.out.write(data[start:end])
        else:
            self._hold(end - start)
            self.value += data[start:end]

    def part_end(self) -> None:
        if self.name is not None and self.name != "file":
            self.upload.fields[self.name] = self.value.decode("utf-8", errors="replace")

    def end(self) -> None:
        self.ended = True

    def finished(self) -> Upload:
        if not self.ended:  # python-multipart's finalize does not check for the closing boundary
            message = "the multipart body ended before its closing boundary"
            raise InvalidRequest(message, param="file", code="invalid_multipart")
        return self.upload

    def _hold(self, size: int) -> None:
        self.held += size
        if self.held > FIELDS_MAX_BYTES:
            message = f"the form's fields other than `file` are over {FIELDS_MAX_BYTES} bytes"
            raise InvalidRequest(message, param=self.name, code="field_too_large")
