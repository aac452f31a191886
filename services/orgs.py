"""Orgs and API keys. The keys' logic lives in services/api_keys.py; these names stay here for
the callers that import them from this module (the MCP server, the demo, the tests)."""

from __future__ import annotations

from services.api_keys import KEY_PREFIX, authenticate, create_key, hash_key

__all__ = ["KEY_PREFIX", "authenticate", "create_key", "hash_key"]
