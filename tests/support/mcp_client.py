"""A real MCP client (the `mcp` SDK's own) for the tests, over streamable HTTP or stdio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult


def mcp_url(server_base_url: str) -> str:
    return server_base_url.rstrip("/").removesuffix("/v1") + "/mcp"


@asynccontextmanager
async def http_client(url: str, api_key: str) -> AsyncIterator[Client]:
    # planning builds the model on the meta device and tokenizes the file: allow it a while
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=httpx2.Timeout(180))
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


def stdio_client(root: Path, env: dict[str, str]) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cli.main", "mcp"], env={**os.environ, **env}, cwd=root
    )
    return Client(params, read_timeout_seconds=120)


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that must have succeeded."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # the text content carries the same JSON, for clients that read only text
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


def error(result: CallToolResult) -> str:
    """The message of a call that must have failed as a tool error (not a protocol error)."""
    assert result.is_error and result.structured_content is None, result
    return str(result.content[0].text)  # type: ignore[union-attr]
