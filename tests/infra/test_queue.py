"""The no-service default: a job message goes through kombu's SQLAlchemy transport on SQLite."""

from __future__ import annotations

import sqlite3

from infra.queue import make_celery


def test_sqlite_broker_accepts_a_job_message(tmp_path, monkeypatch) -> None:
    from infra.settings import get_settings

    monkeypatch.delenv("EDGETUNE_BROKER_URL", raising=False)
    monkeypatch.setenv("EDGETUNE_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        app = make_celery()
        assert app.conf.broker_url.startswith("sqla+sqlite:///")
        app.send_task("edgetune.run_job", args=["ftjob-x"])
        with sqlite3.connect(tmp_path / "broker.db") as db:
            (count,) = db.execute("select count(*) from kombu_message").fetchone()
        assert count == 1
    finally:
        get_settings.cache_clear()
