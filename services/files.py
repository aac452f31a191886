"""Training files: validated at upload, stored in the artifact store, owned by one org.

An upload is copied to a temporary file in chunks (the cap enforced while copying), scanned one line
at a time (one row in memory, never the file's rows), hashed as it is copied, and streamed to the
store from disk: the API's memory stays flat in the file's size. The route parses the multipart body
and calls `upload_file` in worker threads (api/multipart_upload.py), so neither holds the event
loop, and `api/errors.InputGuard` refuses a body over the cap while it is still arriving.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.chat_rows import MAX_REPORTED_ERRORS, MAX_ROW_BYTES, RowError, check_row, parse_jsonl
from domain.job_config import MAX_JSON_DEPTH, json_depth_exceeds
from domain.lists import METHODS, MethodType, RowFormat
from infra.models import File, Org, new_id
from infra.settings import get_settings
from infra.storage import get_store
from services.errors import InvalidRequest, NotFound, PayloadTooLarge
from services.pagination import page
from services.schemas.files import PURPOSES, FilePublic


def to_public(f: File) -> FilePublic:
    return FilePublic(
        id=f.id,
        filename=f.filename,
        purpose=f.purpose,
        bytes=f.bytes,
        created_at=f.created_at,
        sha256=f.sha256,
        row_count=f.row_count,
    )


COPY_CHUNK = 1024 * 1024  # bytes read from the spooled upload at a time


def check_name(*, filename: str, purpose: str) -> None:
    """What can be checked before a byte of the file is read."""
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}", param="purpose")
    if not filename.endswith(".jsonl"):
        raise InvalidRequest("fine-tune files must be JSONL (*.jsonl)", param="file")


@dataclass
class Scan:
    """One pass over a JSONL file: its good rows counted, its bad lines (the first
    MAX_REPORTED_ERRORS of `bad`) with their reasons."""

    rows: int = 0
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)
    empty: bool = True

    def error(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(line, reason))


def _lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line or None when its content is longer than `max_bytes`, that length): at
    most `max_bytes` + 1 bytes of one line are ever held, however long the line is."""
    n = 0
    while chunk := stream.readline(max_bytes + 1):
        n += 1
        size = len(chunk) - chunk.endswith(b"\n")
        if size <= max_bytes:
            yield n, chunk, size
            continue
        while chunk and not chunk.endswith(b"\n"):  # skip the rest of the long line
            chunk = stream.readline(COPY_CHUNK)
            size += len(chunk) - chunk.endswith(b"\n")
        yield n, None, size


def scan_rows(stream: BinaryIO) -> Scan:
    """Every line of a seekable JSONL stream checked as its format's rows (chat or preference,
    from the first JSON object: `sniff_format`), without keeping any row."""
    from recipes.preference_data import MAX_PREFERENCE_ROW_BYTES, canonical_row

    fmt = sniff_format(stream)
    stream.seek(0)
    max_bytes = MAX_PREFERENCE_ROW_BYTES if fmt == "preference" else MAX_ROW_BYTES
    scan = Scan()
    for n, line, size in _lines(stream, max_bytes):
        if line is not None and not line.strip():
            continue
        scan.empty = False
        if line is None:
            scan.error(n, f"row is {size} bytes, over the {max_bytes}-byte limit")
            continue
        reason = _line_problem(line, fmt, canonical_row)
        if reason:
            scan.error(n, reason)
        else:
            scan.rows += 1
    return scan


def _line_problem(line: bytes, fmt: RowFormat, canonical_row: Any) -> str | None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 ({exc.reason})"
    # nested past the limit is refused before the parser (which would recurse) sees it
    if json_depth_exceeds(line, MAX_JSON_DEPTH):
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"bad JSON ({exc.msg} at column {exc.colno})"
    if fmt == "preference":
        result = canonical_row(row)
        return result if isinstance(result, str) else None
    return check_row(row)


def _checked(scan: Scan) -> int:
    if scan.empty:
        raise InvalidRequest("file is empty", param="file", code="empty_file")
    if scan.bad:
        shown = "; ".join(str(e) for e in scan.errors[:10])
        more = f" (and {scan.bad - 10} more)" if scan.bad > 10 else ""
        raise InvalidRequest(
            f"{scan.bad} invalid row(s): {shown}{more}",
            param="file",
            code="invalid_file",
            details=[{"line": e.line, "reason": e.reason} for e in scan.errors],
        )
    return scan.rows


def file_format(data: bytes) -> RowFormat:
    """What a JSONL file holds, from its first JSON object: preference pairs (TRL's prompt/chosen/
    rejected or OpenAI's DPO input/preferred_output/non_preferred_output) or chat rows (OpenAI's
    `messages`). A file is one or the other; its rows are then checked by that format's rules."""
    return sniff_format(io.BytesIO(data))


def sniff_format(stream: BinaryIO) -> RowFormat:
    """`file_format` of a stream, reading lines (each at most a row's size) up to the first JSON
    object; the stream is left wherever that was."""
    from recipes.preference_data import MAX_PREFERENCE_ROW_BYTES, OPENAI_KEYS, TRL_KEYS

    for _, line, _ in _lines(stream, MAX_PREFERENCE_ROW_BYTES):
        if line is None or json_depth_exceeds(line, MAX_JSON_DEPTH):
            continue
        try:
            first = json.loads(line.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            continue
        if isinstance(first, dict) and "messages" not in first and set(first) & {*TRL_KEYS, *OPENAI_KEYS}:
            return "preference"
        return "chat"
    return "chat"


def parse_rows(data: bytes, fmt: RowFormat) -> tuple[list[dict[str, Any]], list[RowError]]:
    from recipes.preference_data import parse_preference_jsonl

    return parse_preference_jsonl(data) if fmt == "preference" else parse_jsonl(data)


def read_rows(
    *, session: Session, org: Org, file_id: str, param: str, method: MethodType
) -> list[dict[str, Any]]:
    """A stored file's rows as `method` trains on them: preference pairs for DPO, chat rows for
    supervised; a file of the other kind is a 400 naming the parameter."""
    data = file_content(session=session, org=org, file_id=file_id)
    fmt = file_format(data)
    wanted = METHODS[method].rows
    if fmt != wanted:
        hint = (
            f"method.type '{method}' needs preference pairs (prompt/chosen/rejected, or OpenAI's "
            "input/preferred_output/non_preferred_output)"
            if wanted == "preference"
            else f"it holds {fmt} pairs: train on them with method.type "
            + " or ".join(f"'{m}'" for m, f in METHODS.items() if f.rows == fmt)
        )
        message = f"{param} {file_id} holds {fmt} rows; {hint}"
        raise InvalidRequest(message, param=param, code="wrong_file_format")
    rows, _ = parse_rows(data, fmt)  # checked at upload
    return rows


def create_file(*, session: Session, org: Org, filename: str, purpose: str, data: bytes) -> File:
    """A file from bytes in memory (an agent tool's rows, a synthesized set)."""
    return upload_file(session=session, org=org, filename=filename, purpose=purpose, stream=io.BytesIO(data))


def upload_file(*, session: Session, org: Org, filename: str, purpose: str, stream: BinaryIO) -> File:
    """A file from a stream (the upload's spooled body): copied to disk in chunks with the cap
    enforced as it goes, scanned a line at a time, then streamed to the store. Blocking: call it
    from a worker thread (the route does)."""
    check_name(filename=filename, purpose=purpose)
    with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
        path = Path(tmp) / "upload.jsonl"
        size, sha256 = _copy_capped(stream, path)
        with path.open("rb") as f:
            row_count = _checked(scan_rows(f))
        f_row = File(
            id=new_id("file"),
            org_id=org.id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            sha256=sha256,
            row_count=row_count,
            storage_key="",
        )
        f_row.storage_key = f"files/{org.id}/{f_row.id}.jsonl"
        # Bytes first, row second: a crash in between leaves an orphan object, never a row without bytes.
        get_store().put_file(f_row.storage_key, path)
    session.add(f_row)
    session.commit()
    return f_row


def _copy_capped(stream: BinaryIO, dest: Path) -> tuple[int, str]:
    """Copy `stream` to `dest` in COPY_CHUNK pieces; (bytes, sha256). PayloadTooLarge at the cap,
    as soon as the copy passes it (nothing is stored)."""
    limit, size, digest = get_settings().max_upload_bytes, 0, hashlib.sha256()
    with dest.open("wb") as out:
        while chunk := stream.read(COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"file is over the {limit}-byte limit", param="file")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def get_file(*, session: Session, org: Org, file_id: str, param: str = "file_id") -> File:
    f = session.get(File, file_id)
    if f is None or f.org_id != org.id:
        raise NotFound(f"No such file: {file_id!r}", param=param, code="file_not_found")
    return f


def list_files(*, session: Session, org: Org, after: str | None, limit: int) -> tuple[list[File], bool]:
    after_row = get_file(session=session, org=org, file_id=after, param="after") if after else None
    stmt = select(File).where(File.org_id == org.id)
    return page(session, stmt, (File.created_at, File.id), after_row, limit)


def file_content(*, session: Session, org: Org, file_id: str) -> bytes:
    return get_store().get_bytes(get_file(session=session, org=org, file_id=file_id).storage_key)


def stream_content(*, session: Session, org: Org, file_id: str) -> tuple[File, Iterator[bytes]]:
    """A file's row and its bytes as the store streams them (a download never holds the file)."""
    f = get_file(session=session, org=org, file_id=file_id)
    return f, get_store().iter_range(f.storage_key, 0, f.bytes - 1)


def delete_file(*, session: Session, org: Org, file_id: str) -> None:
    f = get_file(session=session, org=org, file_id=file_id)
    session.delete(f)
    session.commit()
    get_store().delete(f.storage_key)  # jobs copy their data at start, so deleting is safe
