"""Real parts for the tests: a fresh PostgreSQL database, Redis as the Celery broker, moto's S3
server as the artifact store, a live uvicorn server, and (for end-to-end tests) a real Celery
worker process. Settings reach every process through EDGETUNE_* environment variables."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.databases import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
REDIS_DB = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reset_caches() -> None:
    from infra.db import get_engine, get_sessionmaker
    from infra.price_book import price_book
    from infra.queue import producer
    from infra.settings import get_settings
    from infra.storage import get_store

    for fn in (get_settings, get_engine, get_sessionmaker, get_store, producer, price_book):
        fn.cache_clear()


@dataclass
class Platform:
    var_dir: Path
    database_url: str
    broker_url: str
    s3_endpoint: str
    models_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    """Process-wide settings for service tests: PostgreSQL + Redis + moto S3, migrated."""
    import boto3
    from moto.server import ThreadedMotoServer

    from infra.migrate import upgrade_head

    var_dir = Path(tempfile.mkdtemp(prefix="edgetune-test-"))
    db_name, db_url = create_database()
    broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
    # A queue of its own: test sessions running side by side (or a leftover worker) on the same
    # Redis must not take each other's jobs.
    queue = f"edgetune-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "EDGETUNE_VAR_DIR": str(var_dir),
        "EDGETUNE_DATABASE_URL": db_url,
        "EDGETUNE_BROKER_URL": broker,
        "EDGETUNE_QUEUE": queue,
        "EDGETUNE_ARTIFACT_STORE": "s3://edgetune-test/registry",
        "EDGETUNE_S3_ENDPOINT_URL": endpoint,
        "EDGETUNE_MODELS_DIR": str(var_dir / "models-in"),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Tests serve tenant teachers on 127.0.0.1 (tests/synth/fake_teacher.py): the operator's
        # allowlist lets them through; tests/api/test_outbound.py clears it to test the refusal.
        "EDGETUNE_OUTBOUND_ALLOW": "127.0.0.1",
    }
    os.environ.update(env)
    _reset_caches()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="edgetune-test")
    upgrade_head(db_url)
    global _PLATFORM_UP
    _PLATFORM_UP = True
    yield Platform(var_dir, db_url, broker, endpoint, var_dir / "models-in", env)
    _PLATFORM_UP = False
    from infra.db import get_engine

    get_engine().dispose()
    moto.stop()
    drop_database(db_name)


_PLATFORM_UP = False


@pytest.fixture(scope="module", autouse=True)
def _settle_unfinished_work() -> Iterator[None]:
    """Cancel, at the end of each module, the jobs and datasets it left queued or running.

    Every test shares one database, and every worker's reaper (worker/lifecycle.py) sends again any
    job queued longer than EDGETUNE_JOB_REQUEUE_AFTER_S and resumes any running one whose heartbeat
    stopped. Without this, the dozens of jobs that API-only modules (the fuzz run, the limits) leave
    queued are picked up by the next module's worker ten minutes later, and that module's own job
    waits behind them past its timeout."""
    yield
    if not _PLATFORM_UP:
        return
    from sqlalchemy import update

    from infra.db import session_scope
    from infra.models import Job, SyntheticDataset, now
    from services.spend_budgets import ACTIVE

    with session_scope() as session:
        for model in (Job, SyntheticDataset):
            session.execute(
                update(model).where(model.status.in_(ACTIVE)).values(status="cancelled", finished_at=now())
            )


@pytest.fixture(scope="session")
def tiny_base(platform: Platform) -> str:
    """A tiny random LFM2 registered as a local base model; returns its model id."""
    from tests.support.tiny_lfm2 import build_tiny_lfm2

    template = (ROOT / "recipes" / "chat_templates" / "lfm2.jinja").read_text()
    build_tiny_lfm2(platform.models_dir / "test" / "tiny-lfm2", template)
    return "test/tiny-lfm2"


@pytest.fixture(scope="session")
def tiny_small_base(platform: Platform) -> str:
    """A smaller tiny LFM2 (hidden 128), a second local base for sweeps over bases."""
    from tests.support.tiny_lfm2 import build_tiny_lfm2

    template = (ROOT / "recipes" / "chat_templates" / "lfm2.jinja").read_text()
    build_tiny_lfm2(platform.models_dir / "test" / "tiny-lfm2-small", template, seed=1, hidden_size=128)
    return "test/tiny-lfm2-small"


@dataclass
class Server:
    base_url: str
    api: httpx.Client


@pytest.fixture(scope="session")
def server(platform: Platform) -> Iterator[Server]:
    """The API on a real socket (uvicorn in a thread of this process)."""
    import uvicorn

    from api.main import create_app

    port = free_port()
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    with httpx.Client(base_url=f"{base}/v1", timeout=60) as client:
        yield Server(f"{base}/v1", client)
    srv.should_exit = True
    thread.join(timeout=10)


def new_key(org: str | None = None) -> str:
    from infra.db import session_scope
    from services.orgs import create_key

    with session_scope() as session:
        _, key = create_key(session=session, org_name=org or f"org-{secrets.token_hex(4)}")
    return key


@pytest.fixture()
def api_key(platform: Platform) -> str:
    return new_key()


def start_worker(env: dict[str, str], log_path: Path, *, own_group: bool = False) -> subprocess.Popen[bytes]:
    """A worker process; with `own_group`, in a process group of its own (as on a machine of its
    own: killing the group takes the worker and its stage processes, nothing else)."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=own_group,
    )


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker process for the block; terminated (killed if it hangs) on the way out."""
    proc = start_worker(env, log_path)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
