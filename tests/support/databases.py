"""A fresh PostgreSQL database on the machine's server (127.0.0.1:5432, trust auth), for the tests'
platform, the migration tests and the fleet benchmark (bench/fleet_throughput.py)."""

from __future__ import annotations

import secrets

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def create_database(prefix: str = "edgetune_test") -> tuple[str, str]:
    """A new, empty database: (its name, its SQLAlchemy URL)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
