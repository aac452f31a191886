"""The console's templates (api/console/templates) and the filters they format numbers with."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html
STATIC_DIR = HERE / "static"


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def when(epoch: int | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def targets(items: list[Any]) -> str:
    """A job's targets in words: a profile name, or one with how it picks ("best within budget")."""
    return ", ".join(
        t if isinstance(t, str) else t["profile"] + ("" if t["select"] == "default" else f" ({t['select']})")
        for t in items
    )


TEMPLATES.env.filters.update(usd=usd, when=when, size=size, targets=targets)


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    # Console pages show an org's data: never cached by the browser or a proxy.
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return TEMPLATES.TemplateResponse(
        request, name, dict(context), status_code=status_code, headers=all_headers
    )
