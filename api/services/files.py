"""Training files: validated whole at upload, stored in the artifact store, owned by one org."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.schemas.files import PURPOSES, FilePublic
from api.services.pagination import page
from infra.chat_rows import RowError, parse_jsonl
from infra.errors import InvalidRequest, NotFound, PayloadTooLarge
from infra.job_config import MAX_JSON_DEPTH, json_depth_exceeds
from infra.models import File, Org, new_id
from infra.settings import get_settings
from infra.storage import get_store


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


def validate_upload(*, filename: str, purpose: str, data: bytes) -> int:
    """Check an upload against every rule; returns its row count or raises with all bad lines."""
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}", param="purpose")
    if len(data) > get_settings().max_upload_bytes:
        raise PayloadTooLarge(
            f"file is {len(data)} bytes, over the {get_settings().max_upload_bytes}-byte limit", param="file"
        )
    if not data.strip():
        raise InvalidRequest("file is empty", param="file", code="empty_file")
    if not filename.endswith(".jsonl"):
        raise InvalidRequest("fine-tune files must be JSONL (*.jsonl)", param="file")
    # Rows nested past the limit are refused before any parser (which would recurse) sees them.
    rows: list[dict[str, Any]] = []
    errors = too_deep_rows(data)
    if not errors:
        rows, errors = parse_rows(data, file_format(data))
    if errors:
        shown = "; ".join(str(e) for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise InvalidRequest(
            f"{len(errors)} invalid row(s): {shown}{more}",
            param="file",
            code="invalid_file",
            details=[{"line": e.line, "reason": e.reason} for e in errors],
        )
    return len(rows)


def too_deep_rows(data: bytes) -> list[RowError]:
    """Lines whose JSON nests deeper than MAX_JSON_DEPTH (counted without parsing)."""
    return [
        RowError(i, f"nested deeper than {MAX_JSON_DEPTH} levels")
        for i, line in enumerate(data.splitlines(), start=1)
        if json_depth_exceeds(line, MAX_JSON_DEPTH)
    ]


RowFormat = Literal["chat", "preference"]


def file_format(data: bytes) -> RowFormat:
    """What a JSONL file holds, from its first JSON object: preference pairs (TRL's prompt/chosen/
    rejected or OpenAI's DPO input/preferred_output/non_preferred_output) or chat rows (OpenAI's
    `messages`). A file is one or the other; its rows are then checked by that format's rules."""
    from recipes.preference_data import OPENAI_KEYS, TRL_KEYS

    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            first = json.loads(line)
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
    *, session: Session, org: Org, file_id: str, param: str, method: Literal["supervised", "dpo"]
) -> list[dict[str, Any]]:
    """A stored file's rows as `method` trains on them: preference pairs for DPO, chat rows for
    supervised; a file of the other kind is a 400 naming the parameter."""
    data = file_content(session=session, org=org, file_id=file_id)
    fmt = file_format(data)
    wanted = "preference" if method == "dpo" else "chat"
    if fmt != wanted:
        hint = (
            "method.type 'dpo' needs preference pairs (prompt/chosen/rejected, or OpenAI's "
            "input/preferred_output/non_preferred_output)"
            if method == "dpo"
            else "it holds preference pairs: train on them with method.type 'dpo'"
        )
        message = f"{param} {file_id} holds {fmt} rows; {hint}"
        raise InvalidRequest(message, param=param, code="wrong_file_format")
    rows, _ = parse_rows(data, fmt)  # checked at upload
    return rows


def create_file(*, session: Session, org: Org, filename: str, purpose: str, data: bytes) -> File:
    row_count = validate_upload(filename=filename, purpose=purpose, data=data)
    f = File(
        id=new_id("file"),
        org_id=org.id,
        filename=filename,
        purpose=purpose,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        row_count=row_count,
        storage_key="",
    )
    f.storage_key = f"files/{org.id}/{f.id}.jsonl"
    # Bytes first, row second: a crash in between leaves an orphan object, never a row without bytes.
    get_store().put_bytes(f.storage_key, data)
    session.add(f)
    session.commit()
    return f


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


def delete_file(*, session: Session, org: Org, file_id: str) -> None:
    f = get_file(session=session, org=org, file_id=file_id)
    session.delete(f)
    session.commit()
    get_store().delete(f.storage_key)  # jobs copy their data at start, so deleting is safe
