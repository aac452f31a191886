"""Live events as Server-Sent Events: the frames of `GET /v1/fine_tuning/jobs/{id}/events` when it
streams, and of `GET /v1/synthetic_datasets/{id}/events`.

A stream polls the database on a timer rather than subscribing to anything: the worker writes
events and statuses from its own process, and reading them back needs no pub/sub service beside
the database every deployment already has. Each read is a short session in a worker thread, so an
open stream holds neither a thread nor a pooled connection between reads. Ownership and the resume
point are checked before the first byte is sent (a 404 then is still an ordinary JSON error).

Frames (https://html.spec.whatwg.org/multipage/server-sent-events.html):
  jobs      `id: <event id>`, `event: fine_tuning.job.event`, `data: <EventPublic>`, oldest first;
            then `event: done` with the job (JobPublic) once it has ended and every event is sent
  datasets  `id: <hash of status and progress>`, `event: synthetic_dataset.progress`,
            `data: <SyntheticDatasetPublic>` each time (status, progress) changes; then `event: done`
A `: keep-alive` comment goes out after a silence (proxies drop idle connections); a stream that
reaches its lifetime ends with a comment and no `done`, and the client reconnects with Last-Event-ID.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain.lists import TERMINAL
from infra.db import get_sessionmaker
from infra.models import Job, JobEvent, Org, SyntheticDataset, now
from infra.settings import get_settings
from services import jobs, synthetic_datasets
from services.errors import NotFound
from services.schemas.jobs import EventPublic
from services.schemas.synthetic_datasets import SyntheticDatasetPublic

log = logging.getLogger(__name__)

JOB_EVENT = "fine_tuning.job.event"
DATASET_PROGRESS = "synthetic_dataset.progress"
DONE = "done"
KEEP_ALIVE = ": keep-alive\n\n"
LIFETIME_REACHED = ": this stream reached its lifetime; reconnect with Last-Event-ID to go on\n\n"
DATABASE_LOST = ": the server lost its database; reconnect with Last-Event-ID to go on\n\n"
GONE = ": deleted\n\n"
BATCH = 100  # events per read; a longer backlog goes out in several reads, back to back
# An event's seq is taken at INSERT but seen only from COMMIT, so two writers of one job's events
# (the worker, a cancel through the API) can make seq 11 visible before seq 10. Events this recent
# are therefore read again whatever their seq, and the ones not sent yet go out then.
LATE_COMMIT_S = 5


def frame(data: str, *, event: str, id: str | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


@dataclass(frozen=True)
class Pace:
    """How often a stream reads, when it sends a keep-alive, how long it lives (seconds)."""

    poll_s: float
    keepalive_s: float
    max_s: float

    @classmethod
    def from_settings(cls) -> Pace:
        s = get_settings()
        return cls(s.event_stream_poll_s, s.event_stream_keepalive_s, s.event_stream_max_s)


@dataclass
class Batch:
    """What one read found: frames to send; `finished` when the last is `done` (or the row is gone);
    `more` when the read was cut at BATCH and the next should follow at once."""

    frames: list[str]
    finished: bool = False
    more: bool = False


async def paced(read: Callable[[], Awaitable[Batch]], pace: Pace) -> AsyncIterator[str]:
    """Send what each read finds until one finishes or the stream's lifetime is up."""
    started = quiet_since = time.monotonic()
    while True:
        try:
            batch = await read()
        except SQLAlchemyError as exc:
            # The 200 is already under way: end it readably; the client's reconnect gets the 503.
            log.warning("an event stream lost the database: %r", exc)
            yield DATABASE_LOST
            return
        for text in batch.frames:
            yield text
        if batch.finished:
            return
        clock = time.monotonic()
        if batch.frames:
            quiet_since = clock
        if clock - started >= pace.max_s:
            yield LIFETIME_REACHED
            return
        if batch.more:
            continue
        if clock - quiet_since >= pace.keepalive_s:
            yield KEEP_ALIVE
            quiet_since = clock
        await anyio.sleep(min(pace.poll_s, pace.max_s - (clock - started)))


def _release(session: Session) -> None:
    # A stream may stay open for minutes, and the request's session is closed only once the response
    # has been sent: give its pooled connection back now; each read takes a session of its own.
    session.close()


# ---- jobs ---------------------------------------------------------------------------------------


def open_job_stream(
    *, session: Session, org: Org, job_id: str, last_event_id: str | None, after: str | None
) -> AsyncIterator[str]:
    """The job's events strictly after the resume point (the Last-Event-ID header, else `after`),
    then each new one as it is written, then `done`. Another org's job, or a resume point that is
    not an event of this job, raises NotFound before anything is sent."""
    job = jobs.get_job(session=session, org=org, job_id=job_id)
    param, resume = ("Last-Event-ID", last_event_id) if last_event_id else ("after", after)
    after_seq = 0  # seqs start at 1
    if resume:
        seq = session.scalar(select(JobEvent.seq).where(JobEvent.id == resume, JobEvent.job_id == job.id))
        if seq is None:
            raise NotFound(f"No such event of job {job.id}: {resume!r}", param=param, code="event_not_found")
        after_seq = seq
    reader = _JobReader(job.id, after_seq)
    _release(session)
    return paced(reader.read, Pace.from_settings())


def _event_json(row: JobEvent) -> str:
    return EventPublic.model_validate(row, from_attributes=True).model_dump_json()


@dataclass
class _JobReader:
    job_id: str
    after_seq: int  # the highest seq sent (or the resume point)
    floor_seq: int = field(init=False)  # the resume point: nothing at or below it is sent
    recent: dict[str, int] = field(default_factory=dict)  # sent id -> created_at, for late commits

    def __post_init__(self) -> None:
        self.floor_seq = self.after_seq

    async def read(self) -> Batch:
        return await anyio.to_thread.run_sync(self._read)

    def _read(self) -> Batch:
        with get_sessionmaker()() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return Batch([GONE], finished=True)
            # The job before its events: all that was committed with (or before) its terminal
            # status is then visible to the events' read, so `done` never overtakes an event.
            final = jobs.to_public(job) if job.status in TERMINAL else None
            rows = self._new_events(session)
            frames = [frame(_event_json(r), event=JOB_EVENT, id=r.id) for r in rows]
        for r in rows:
            self.recent[r.id] = r.created_at
            self.after_seq = max(self.after_seq, r.seq)
        more = len(rows) == BATCH
        if final is not None and not more:
            return Batch([*frames, frame(final.model_dump_json(), event=DONE)], finished=True)
        return Batch(frames, more=more)

    def _new_events(self, session: Session) -> list[JobEvent]:
        since = now() - LATE_COMMIT_S
        # Ids too old to match `recent` below are forgotten: the set stays as small as the window.
        self.recent = {i: at for i, at in self.recent.items() if at >= since}
        stmt = select(JobEvent).where(
            JobEvent.job_id == self.job_id,
            JobEvent.seq > self.floor_seq,
            or_(JobEvent.seq > self.after_seq, JobEvent.created_at >= since),
        )
        if self.recent:
            stmt = stmt.where(JobEvent.id.not_in(list(self.recent)))
        return list(session.scalars(stmt.order_by(JobEvent.seq).limit(BATCH)))


# ---- synthetic datasets -------------------------------------------------------------------------


def open_dataset_stream(
    *, session: Session, org: Org, dataset_id: str, last_event_id: str | None
) -> AsyncIterator[str]:
    """The dataset's state now (unless Last-Event-ID names it already), each change of its status or
    progress, then `done`. Another org's dataset raises NotFound before anything is sent."""
    ds = synthetic_datasets.get_dataset(session=session, org=org, dataset_id=dataset_id)
    reader = _DatasetReader(ds.id, last_event_id or None)
    _release(session)
    return paced(reader.read, Pace.from_settings())


def snapshot_id(ds: SyntheticDatasetPublic) -> str:
    """A short stable name of (status, progress): the same state always has the same id, so a
    client resuming with the current state's id is not sent that state again. A dataset keeps no
    history of its states, so any other id just gets the current one."""
    key = json.dumps([ds.status, ds.progress], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class _DatasetReader:
    dataset_id: str
    last_id: str | None  # the id of the state the client has

    async def read(self) -> Batch:
        return await anyio.to_thread.run_sync(self._read)

    def _read(self) -> Batch:
        with get_sessionmaker()() as session:
            ds = session.get(SyntheticDataset, self.dataset_id)
            public = synthetic_datasets.to_public(ds) if ds is not None else None
        if public is None:
            return Batch([GONE], finished=True)
        data, state = public.model_dump_json(), snapshot_id(public)
        frames = []
        if state != self.last_id:
            frames.append(frame(data, event=DATASET_PROGRESS, id=state))
            self.last_id = state
        if public.status in TERMINAL:
            return Batch([*frames, frame(data, event=DONE)], finished=True)
        return Batch(frames)
