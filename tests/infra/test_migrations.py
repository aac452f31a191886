"""The Alembic migrations and the SQLAlchemy models describe the same schema (no drift)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from infra.db import make_engine
from infra.migrate import upgrade_head
from infra.models import Base
from tests.support.databases import create_database, drop_database


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_models_on_postgresql() -> None:
    name, url = create_database()
    try:
        assert _drift(url), "an empty database must differ from the models (the check can fail)"
        upgrade_head(url)
        assert _drift(url) == []
    finally:
        drop_database(name)


def test_migrations_run_on_the_sqlite_default(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'edgetune.db'}"
    upgrade_head(url)
    assert _drift(url) == []
