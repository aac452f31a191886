"""Which queue each stage of a routed job runs from (issue 17: CPU stages on CPU workers)."""

from __future__ import annotations


def test_with_pools_a_gpu_job_holds_its_class_only_to_train_and_score(monkeypatch) -> None:
    """services/pools.py queue_for_stage: the rule worker/pipeline.py hands a job between pools by."""
    from domain.lists import STAGES
    from infra.queue import queue_for
    from infra.settings import get_settings
    from services.pools import queue_for_stage

    monkeypatch.setenv("EDGETUNE_QUEUE", "q")
    monkeypatch.setenv("EDGETUNE_COMPUTE_POOLS", "cpu,l4-24gb")
    get_settings.cache_clear()
    try:
        l4, l4x2 = queue_for("l4-24gb"), queue_for("l4-24gb", 2)
        assert (l4, l4x2) == ("q.l4-24gb", "q.l4-24gb.x2")
        plan = {stage: queue_for_stage(l4x2, stage, synthesizes=False) for stage in STAGES}
        assert plan == {
            "prepare": l4x2,  # seconds of work: not worth a hop to another queue
            "synthesize": l4x2,  # nothing to synthesize (a training file): passes through
            "train": l4x2,
            "evaluate": l4x2,
            "export": "q",
            "gate": "q",
            "publish": "q",
        }
        # a job that synthesizes starts on the CPU queue: the teacher needs no GPU of the job's
        assert [queue_for_stage(l4, s, synthesizes=True) for s in ("prepare", "synthesize")] == ["q", "q"]
        assert {queue_for_stage(queue_for("cpu"), s, synthesizes=True) for s in STAGES} == {"q"}
        monkeypatch.setenv("EDGETUNE_CPU_STAGES_ON_CPU_WORKERS", "false")
        get_settings.cache_clear()
        assert {queue_for_stage(l4, s, synthesizes=True) for s in STAGES} == {l4}
        monkeypatch.setenv("EDGETUNE_COMPUTE_POOLS", "")
        get_settings.cache_clear()
        assert {queue_for_stage(None, s, synthesizes=True) for s in STAGES} == {"q"}  # one queue
    finally:
        get_settings.cache_clear()


def test_a_job_whose_trained_model_was_lost_with_its_machine_goes_back_to_its_class(monkeypatch) -> None:
    """The reaper's resend (services/pools.py queue_now): trained and scored, but lost before the
    model was stored for the hand-over, the job must train again on its class (from its last
    stored checkpoint), not on the CPU queue its next stage belongs to."""
    from infra.models import Job
    from infra.settings import get_settings
    from services.pools import queue_now

    monkeypatch.setenv("EDGETUNE_QUEUE", "q")
    monkeypatch.setenv("EDGETUNE_COMPUTE_POOLS", "cpu,l4-24gb")
    get_settings.cache_clear()
    try:
        config = {"model": "m", "training_file": "file-x"}
        done = ["prepare", "synthesize", "train", "evaluate"]
        lost = Job(queue="q.l4-24gb", config=config, stages_done=done, state={})
        assert queue_now(lost) == "q.l4-24gb"
        stored = Job(
            queue="q.l4-24gb", config=config, stages_done=done, state={"handoff_stored": {"trees": []}}
        )
        assert queue_now(stored) == "q"  # the CPU worker fetches the model and exports
        assert queue_now(Job(queue="q.l4-24gb", config=config, stages_done=[], state={})) == "q.l4-24gb"
    finally:
        get_settings.cache_clear()
