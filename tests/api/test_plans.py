"""The pre-run plan (tokens, FLOPs, memory, time, quote) and the budget gate at create."""

from __future__ import annotations

import io

import httpx
import openai
import pytest

from infra.price_book import price_book
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import ROOT


@pytest.fixture()
def client(server, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


@pytest.fixture()
def api(server, api_key) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)


ROWS = sentiment_rows(40)


@pytest.fixture()
def train_file(client) -> str:
    return client.files.create(file=("t.jsonl", io.BytesIO(jsonl(ROWS))), purpose="fine-tune").id


def _independent_token_count(model_dir) -> list[int]:
    """Rendered with the LFM2 training template by jinja through the tokenizer, row by row."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = (ROOT / "recipes" / "chat_templates" / "lfm2.jinja").read_text()
    out = [tok.apply_chat_template(r["messages"], tokenize=True) for r in ROWS]
    return [len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids) for ids in out]


def _file(client, n: int) -> str:
    return client.files.create(file=("v.jsonl", io.BytesIO(jsonl(sentiment_rows(n)))), purpose="fine-tune").id


def test_plan_counts_real_tokens_and_prices_every_stage(api, train_file, tiny_base, platform) -> None:
    body = {"model": tiny_base, "training_file": train_file, "targets": ["laptop-cpu", "gpu-server"]}
    plan = api.post("/fine_tuning/jobs/plan", json=body).json()
    assert plan["object"] == "fine_tuning.job.plan", plan

    lengths = _independent_token_count(platform.models_dir / tiny_base)
    tokens = plan["tokens"]
    assert tokens["exact"] and tokens["train_rows"] + tokens["eval_rows"] == len(ROWS)
    # no validation file: 10% held out, raised to the 20 rows the gate judges on (half of 40)
    assert tokens["eval_rows"] == 20
    # 20 training rows + 10 replay rows (the base's own answers, recipes/replay.py: half a row each,
    # at least 8), priced at the training rows' mean length
    assert tokens["replay_rows"] == 10
    trained_rows = tokens["train_rows"] + tokens["replay_rows"]
    assert tokens["train_tokens_per_epoch"] == round(sum(lengths) / len(ROWS) * trained_rows)
    assert tokens["longest_row_tokens"] == max(lengths)

    hp = plan["hyperparameters"]
    assert hp["steps"] == hp["n_epochs"] * -(-trained_rows // hp["batch_size"])
    assert 0 < plan["trainable_params"] < plan["total_params"]
    # 4N per trained token for LoRA is the floor (the attention term only adds)
    trained = tokens["train_tokens_per_epoch"] * hp["n_epochs"]
    assert plan["training_flops"] >= 4 * trained * (plan["total_params"] - plan["trainable_params"]) * 0.5

    gpus = {m["gpu"]: m for m in plan["memory"]}
    assert {"h100-80gb", "l4-24gb"} <= set(gpus) and all(m["fits"] for m in gpus.values())
    assert plan["fits"] is True and plan["no_fit_reason"] is None
    # the fast path's choice per GPU (recipes.speed): the whole batch, and a tiny model needs no
    # checkpointing anywhere
    for m in gpus.values():
        assert m["micro_batch_size"] * m["grad_accum"] == hp["batch_size"], m
        assert m["activation_checkpointing"] is False, m

    quote = plan["quote"]
    assert quote["total_usd"] == pytest.approx(sum(i["amount_usd"] for i in quote["items"]), abs=1e-5)
    stages = {i["stage"] for i in quote["items"]}
    assert {"prepare", "train", "evaluate", "export", "gate", "publish", "storage"} <= stages
    assert "synthesize" not in stages  # the data is given
    train_item = next(i for i in quote["items"] if i["stage"] == "train")
    assert train_item["quantity"] == plan["estimated_seconds"]["train"]
    assert plan["budget"]["allowed_to_proceed"] is True


def test_plan_for_a_task_estimates_synthesis_and_teacher_tokens(api, tiny_base) -> None:
    body = {
        "model": tiny_base,
        "task": {
            "description": "Classify the review.",
            "labels": ["positive", "negative"],
            "num_examples": 80,
        },
    }
    plan = api.post("/fine_tuning/jobs/plan", json=body).json()
    assert plan["tokens"]["exact"] is False
    assert plan["tokens"]["train_rows"] + plan["tokens"]["eval_rows"] == 80
    units = {i["unit"] for i in plan["quote"]["items"] if i["stage"] == "synthesize"}
    assert units == {"cpu_second", "teacher_1k_tokens"}
    # 25% of 80 held out (20, the gate's min_eval_rows); the floor is half the 60 training rows
    synthesis = plan["synthesis"]
    assert (synthesis["asked"], synthesis["train_rows"], synthesis["eval_rows"]) == (80, 60, 20)
    assert synthesis["floor"]["train"] == 30 and synthesis["floor"]["eval"] == 20
    assert synthesis["floor"]["train_per_key"] == {"positive": 3, "negative": 3}
    assert synthesis["max_requests"] == 4 * 80

    # A round trip (by default: measure) adds one labelling request per candidate: priced per row
    # from the price book; without one, only the writing.
    t = price_book().throughput
    filtered = {**body, "task": {**body["task"], "round_trip": "filter"}}
    body = {**body, "task": {**body["task"], "round_trip": "off"}}
    tokens = {
        name: next(
            i["quantity"]
            for i in api.post("/fine_tuning/jobs/plan", json=b).json()["quote"]["items"]
            if i["unit"] == "teacher_1k_tokens"
        )
        for name, b in (("plain", body), ("filtered", filtered))
    }
    assert tokens["plain"] == pytest.approx(80 * t.teacher_tokens_per_row / 1000, rel=1e-3)
    assert tokens["filtered"] == pytest.approx(
        80 * (t.teacher_tokens_per_row + t.round_trip_tokens_per_row) / 1000, rel=1e-3
    )

    # The customer's seeds that carry an answer are asked back once a run (the teacher's check on
    # rows known to be right): one round-trip request each; a seed without an answer is not.
    seeds = [
        {"input": "Loved it.", "output": "positive"},
        {"input": "Broke in a day.", "output": "negative"},
        {"input": "Arrived on Tuesday."},
    ]
    seeded = {**filtered, "task": {**filtered["task"], "seed_examples": seeds}}
    items = api.post("/fine_tuning/jobs/plan", json=seeded).json()["quote"]["items"]
    quantity = next(i["quantity"] for i in items if i["unit"] == "teacher_1k_tokens")
    assert quantity == pytest.approx(tokens["filtered"] + 2 * t.round_trip_tokens_per_row / 1000, rel=1e-3)


def test_a_task_too_small_for_its_gate_is_refused_before_anything_is_paid(api, client, tiny_base) -> None:
    task = {"description": "Classify the review.", "labels": ["positive", "negative"], "num_examples": 30}
    r = api.post("/fine_tuning/jobs/plan", json={"model": tiny_base, "task": task})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "too_few_eval_rows" and error["param"] == "task.num_examples"
    assert "holds out 15 rows" in error["message"] and "at least 40" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model=tiny_base, training_file=openai.omit, extra_body={"task": task})
    # a validation file beside a task is not what the task job is judged on: the message says so
    with_file = {"model": tiny_base, "task": task, "validation_file": _file(client, 40)}
    assert api.post("/fine_tuning/jobs/plan", json=with_file).json()["error"]["param"] == "task.num_examples"
    # more held-out rows than a job is ever scored on (64), or a held-out share over half: 400
    for gate_or_task, param in (
        ({"gate": {"min_eval_rows": 65}}, "gate.min_eval_rows"),
        ({"task": {**task, "num_examples": 200, "eval_fraction": 0.75}}, "task.eval_fraction"),
    ):
        r = api.post("/fine_tuning/jobs/plan", json={"model": tiny_base, "task": task, **gate_or_task})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    # the customer may judge on fewer rows, knowingly
    small = {"model": tiny_base, "task": task, "gate": {"min_eval_rows": 10}}
    assert api.post("/fine_tuning/jobs/plan", json=small).json()["synthesis"]["eval_rows"] == 10


def test_a_file_too_small_for_its_gate_is_refused_naming_the_file(api, client, tiny_base) -> None:
    small = client.files.create(
        file=("s.jsonl", io.BytesIO(jsonl(sentiment_rows(30)))), purpose="fine-tune"
    ).id
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model=tiny_base, training_file=small)
    body = exc.value.body
    assert isinstance(body, dict) and body["code"] == "too_few_eval_rows" and body["param"] == "training_file"
    assert "a 30-row file without a validation file holds out 15" in body["message"]
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before  # nothing stored
    body = {"model": tiny_base, "training_file": small, "validation_file": small}
    r = api.post("/fine_tuning/jobs/plan", json={**body, "validation_file": _file(client, 8)})
    assert r.json()["error"]["param"] == "validation_file" and "holds 8 rows" in r.json()["error"]["message"]


def test_lora_target_that_matches_nothing_is_refused_at_validation(client, train_file, tiny_base) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(
            model=tiny_base, training_file=train_file, extra_body={"lora": {"target_modules": ["o_proj"]}}
        )
    body = exc.value.body
    assert isinstance(body, dict) and body["param"] == "lora.target_modules"
    assert "o_proj" in body["message"] and "out_proj" in body["message"]  # names what exists


def test_a_job_over_its_own_budget_is_refused_and_nothing_is_stored(
    client, api, train_file, tiny_base
) -> None:
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.APIStatusError) as exc:
        client.fine_tuning.jobs.create(
            model=tiny_base, training_file=train_file, extra_body={"budget_usd": 0.000001}
        )
    assert exc.value.status_code == 402
    assert exc.value.body["code"] == "job_budget_exceeded" and exc.value.body["param"] == "budget_usd"
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before

    plan = api.post(
        "/fine_tuning/jobs/plan", json={"model": tiny_base, "training_file": train_file, "budget_usd": 1e-6}
    ).json()
    assert plan["budget"]["allowed_to_proceed"] is False and "budget_usd" in plan["budget"]["reason"]


def test_org_budget_counts_spend_and_running_quotes(client, api, api_key, train_file, tiny_base) -> None:
    from infra.db import session_scope
    from services.orgs import authenticate
    from services.spend_budgets import set_org_budget

    quote = api.post("/fine_tuning/jobs/plan", json={"model": tiny_base, "training_file": train_file}).json()[
        "quote"
    ]["total_usd"]
    with session_scope() as session:
        org = authenticate(session=session, authorization=f"Bearer {api_key}")
        set_org_budget(session=session, org=org, usd=quote * 1.5)  # room for one job, not two

    first = client.fine_tuning.jobs.create(model=tiny_base, training_file=train_file)  # stays queued
    assert first.status == "queued"
    with pytest.raises(openai.APIStatusError) as exc:
        client.fine_tuning.jobs.create(model=tiny_base, training_file=train_file)
    assert exc.value.status_code == 402 and exc.value.body["code"] == "org_budget_exceeded"

    client.fine_tuning.jobs.cancel(first.id)  # a cancelled job no longer holds its quote
    third = client.fine_tuning.jobs.create(model=tiny_base, training_file=train_file)
    assert third.status == "queued"
    client.fine_tuning.jobs.cancel(third.id)  # leave nothing for a later test's worker to run


def test_evaluate_estimate_counts_the_probe_for_base_and_fine_tuned() -> None:
    """The evaluate stage answers the held-out rows with every model and artifact, and the
    general-ability probe with base and fine-tuned: both are in the estimate."""
    from domain.job_config import JobConfig
    from eval.probe import load_probe
    from infra.price_book import price_book
    from services.plans import _Data, _stage_seconds

    book = price_book()
    targets = ["laptop-cpu", "gpu-server", "browser-webgpu"]
    config = JobConfig(model="LiquidAI/LFM2-350M", training_file="file-x", targets=targets)
    seconds = _stage_seconds(config, _Data([], 36, 4, True), [1e12], 10, book, "cpu")
    # 4 held-out rows x 5 runs (base, base prompted, fine-tuned, the laptop-cpu GGUF, the
    # browser-webgpu ONNX; the gpu-server safetensors are not scored apart) + 64 probe items x 2
    # models (base, fine-tuned)
    assert len(load_probe()) == 64
    assert seconds["evaluate"] == round((4 * 5 + 64 * 2) * book.throughput.eval_s_per_row, 1)
    # DPO's baseline is the bare base: no prompted run
    dpo = JobConfig.model_validate(config.model_dump() | {"method": {"type": "dpo"}})
    seconds = _stage_seconds(dpo, _Data([], 36, 4, True), [1e12], 10, book, "cpu")
    assert seconds["evaluate"] == round((4 * 4 + 64 * 2) * book.throughput.eval_s_per_row, 1)


def test_train_estimate_counts_the_held_out_scores_of_checkpoint_selection() -> None:
    """Keeping the best checkpoint scores `evals` times on up to `eval_rows` held-out rows during
    training: priced as eval rows inside the train stage; shipping the last step costs none."""
    from domain.job_config import JobConfig
    from infra.price_book import price_book
    from services.plans import _Data, _stage_seconds

    book = price_book()

    def train_seconds(checkpoints: dict[str, object], eval_rows: int) -> float:
        config = JobConfig(model="LiquidAI/LFM2-350M", training_file="file-x", checkpoints=checkpoints)
        return _stage_seconds(config, _Data([], 100, eval_rows, True), [1e12], 10, book, "cpu")["train"]  # type: ignore[arg-type]

    last = train_seconds({"select": "last"}, 40)
    rate = book.throughput.eval_s_per_row  # each stage's seconds are rounded to 0.1
    assert train_seconds({}, 40) == pytest.approx(last + 5 * 16 * rate, abs=0.11)
    assert train_seconds({"evals": 3, "eval_rows": 64}, 40) == pytest.approx(last + 3 * 40 * rate, abs=0.11)


@pytest.mark.parametrize(
    ("targets", "params", "refused"),
    [
        (["laptop-cpu", "browser-webgpu"], 354_483_968, None),  # LFM2-350M: ~380 MB of q4
        (["laptop-cpu", "browser-webgpu"], 1_170_340_608, "targets[1]"),  # LFM2-1.2B: ~1.26 GB > 1024
        (["phone-android"], 1_170_340_608, None),  # its Q4_0 GGUF is ~630 MB
        (["raspberry-pi-5"], 2_569_272_320, "targets[0]"),  # LFM2-2.6B's Q4_0 ~1.4 GB > 1024
    ],
)
def test_a_target_whose_artifact_would_surely_be_over_its_size_budget_is_refused_before_training(
    targets: list[str], params: int, refused: str | None
) -> None:
    from domain.job_config import JobConfig
    from services.errors import InvalidRequest
    from services.plans import check_artifact_sizes

    cfg = JobConfig.model_validate(
        {"model": "LiquidAI/LFM2-350M", "training_file": "file-x", "targets": targets}
    )
    if refused is None:
        check_artifact_sizes(cfg, params)
        return
    with pytest.raises(InvalidRequest) as err:
        check_artifact_sizes(cfg, params)
    assert err.value.param == refused and err.value.code == "target_over_budget"
    assert "MB, over the profile's 1024 MB" in err.value.message


def test_a_targets_own_size_budget_is_checked_before_training() -> None:
    from domain.job_config import JobConfig
    from services.errors import InvalidRequest
    from services.plans import check_artifact_sizes

    own = {"profile": "laptop-cpu", "budgets": {"max_artifact_mb": 50}}  # the profile allows 2048
    cfg = JobConfig.model_validate(
        {"model": "LiquidAI/LFM2-350M", "training_file": "file-x", "targets": [own]}
    )
    with pytest.raises(InvalidRequest) as err:
        check_artifact_sizes(cfg, 354_483_968)  # its Q4_K_M GGUF is ~230 MB
    assert err.value.param == "targets[0]" and "MB, over your 50 MB" in err.value.message


def test_a_full_fine_tune_too_big_for_one_gpu_is_planned_and_quoted_on_several(tmp_path, monkeypatch) -> None:
    """LFM2-1.2B full at 2048-token rows: on an L4 (22 GiB) its states alone do not fit, so the
    plan gives it 2 L4s of one node (FSDP), quotes 2 x the L4 rate for the GPU stages and sends it to
    the L4 class's 2-GPU queue; on an H100 it fits one. LoRA is never sharded."""
    from transformers import Lfm2Config

    from domain.job_config import JobConfig
    from infra.queue import queue_for
    from recipes.estimate import ModelShape, training_flops
    from services.plans import _Data, _gpus_on, _memory, _quote, _stage_seconds
    from tests.conftest import _reset_caches

    layer_types = ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]
    Lfm2Config(
        vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, layer_types=layer_types,
    ).save_pretrained(tmp_path)  # fmt: skip
    shape, book = ModelShape.from_dir(tmp_path), price_book()
    full = JobConfig(model="LiquidAI/LFM2-1.2B", training_file="file-x", training_type="full")
    flops = training_flops(shape, "full", 64 * 2048 * 3, 2048)
    memory = {m.gpu: m for m in _memory(shape, full, (16, 1), 2048, shape.params, flops, 12, book)}
    l4, h100 = memory["l4-24gb"], memory["h100-80gb"]
    assert l4.fits and l4.gpus == 2 and l4.peak_memory_gib <= l4.memory_gib
    assert h100.fits and h100.gpus == 1
    assert l4.micro_batch_size is not None and l4.micro_batch_size * (l4.grad_accum or 0) == 8  # 16 rows / 2
    # data parallel: twice the FLOP rate of one L4, the same per-step cost
    one_l4 = _stage_seconds(full, _Data([], 64, 8, True), [flops], 12, book, "l4-24gb", 1)["train"]
    two_l4 = _stage_seconds(full, _Data([], 64, 8, True), [flops], 12, book, "l4-24gb", 2)["train"]
    assert two_l4 < one_l4
    seconds = _stage_seconds(
        full, _Data([], 64, 8, True), [flops], 12, book, "l4-24gb", _gpus_on(list(memory.values()), "l4-24gb")
    )
    quote = _quote(full, seconds, _Data([], 64, 8, True), shape.params, book, "l4-24gb", 2)
    train = next(i for i in quote.items if i.stage == "train")
    assert train.description == "train on 2 x l4-24gb" and train.unit == "l4-24gb_second"
    assert train.quantity == pytest.approx(2 * seconds["train"], abs=1e-3)
    assert train.amount_usd == pytest.approx(2 * seconds["train"] * book.compute_rate("l4-24gb"), rel=1e-3)
    prepare = next(i for i in quote.items if i.stage == "prepare")
    assert prepare.unit == "cpu_second" and prepare.quantity == seconds["prepare"]  # CPU stages: one
    lora = JobConfig(model="LiquidAI/LFM2-1.2B", training_file="file-x", training_type="lora")
    assert all(m.gpus == 1 for m in _memory(shape, lora, (16, 1), 2048, 10**6, flops, 12, book))
    monkeypatch.setenv("EDGETUNE_COMPUTE_POOLS", "cpu,l4-24gb")
    _reset_caches()
    try:
        assert queue_for("l4-24gb", 2).endswith(".l4-24gb.x2") and queue_for("l4-24gb").endswith(".l4-24gb")
    finally:
        monkeypatch.delenv("EDGETUNE_COMPUTE_POOLS")
        _reset_caches()


def test_a_sweep_target_is_priced_for_its_whole_sweep_and_only_where_it_can_sweep(
    api, train_file, tiny_base
) -> None:
    """`select: best_within_budget` exports and scores 4 quantizations (domain/lists.py): the plan
    counts 4 exports and 4 artifact evals for it; a format with nothing to sweep is a 400 naming it."""
    from domain.lists import SWEEP_QUANTIZATIONS

    body = {"model": tiny_base, "training_file": train_file}
    one = api.post("/fine_tuning/jobs/plan", json=body | {"targets": ["raspberry-pi-5"]}).json()
    sweep = {"targets": [{"profile": "raspberry-pi-5", "select": "best_within_budget"}]}
    many = api.post("/fine_tuning/jobs/plan", json=body | sweep).json()
    book = price_book().throughput
    extra = len(SWEEP_QUANTIZATIONS) - 1
    assert many["estimated_seconds"]["export"] == pytest.approx(
        one["estimated_seconds"]["export"] + extra * book.export_s_per_target, abs=0.2
    )
    assert many["estimated_seconds"]["evaluate"] > one["estimated_seconds"]["evaluate"]
    assert many["quote"]["total_usd"] > one["quote"]["total_usd"]
    onnx = {"targets": ["laptop-cpu", {"profile": "browser-webgpu", "select": "best_within_budget"}]}
    bad = api.post("/fine_tuning/jobs", json=body | onnx)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "targets[1].select", bad.text
    unknown = api.post(
        "/fine_tuning/jobs", json=body | {"targets": [{"profile": "laptop-cpu", "select": "fastest"}]}
    )
    assert unknown.status_code == 400 and "targets" in unknown.json()["error"]["param"], unknown.text
    # the job keeps the target as sent, and its config says how it was made
    job = api.post("/fine_tuning/jobs", json=body | sweep).json()
    assert job["targets"] == [{"profile": "raspberry-pi-5", "select": "best_within_budget"}], job
    api.post(f"/fine_tuning/jobs/{job['id']}/cancel")


def test_a_sweep_over_other_bases_is_planned_for_each_and_refuses_a_base_it_cannot_train(
    api, train_file, tiny_base, tiny_small_base
) -> None:
    """`targets[].models` (issue 18 item 3: every base the customer allowed): each other base is a
    whole fine-tune more, scored, probed and swept, and the plan prices all of it before it runs.
    A base the server cannot train is a 400 naming its place in the body, before anything is stored."""
    from domain.lists import SWEEP_QUANTIZATIONS

    body = {"model": tiny_base, "training_file": train_file}
    sweep = {"profile": "raspberry-pi-5", "select": "best_within_budget"}
    one = api.post("/fine_tuning/jobs/plan", json=body | {"targets": [sweep]}).json()
    two = api.post(
        "/fine_tuning/jobs/plan", json=body | {"targets": [sweep | {"models": [tiny_small_base]}]}
    ).json()
    assert [o["model"] for o in two["other_models"]] == [tiny_small_base], two
    small = two["other_models"][0]
    assert 0 < small["total_params"] < two["total_params"] and small["training_flops"] > 0
    assert one["other_models"] == []
    seconds, book = (one["estimated_seconds"], two["estimated_seconds"]), price_book().throughput
    assert seconds[1]["train"] > seconds[0]["train"]
    assert seconds[1]["evaluate"] > seconds[0]["evaluate"]
    assert seconds[1]["export"] == pytest.approx(
        seconds[0]["export"] + len(SWEEP_QUANTIZATIONS) * book.export_s_per_target, abs=0.2
    )
    assert two["quote"]["total_usd"] > one["quote"]["total_usd"]

    jobs_before = api.get("/fine_tuning/jobs").json()["data"]
    cases = [
        ({"models": [tiny_small_base, "test/no-such-base"]}, "targets[0].models[1]", "model_not_found"),
        ({"models": [tiny_small_base, tiny_small_base]}, "targets.0", None),  # pydantic's place
    ]
    for extra, param, code in cases:
        bad = api.post("/fine_tuning/jobs", json=body | {"targets": [sweep | extra]})
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["param"].startswith(param), error
        if code:
            assert error["code"] == code, error
    plain = {"profile": "raspberry-pi-5", "models": [tiny_small_base]}  # no sweep: nothing to choose
    bad = api.post("/fine_tuning/jobs", json=body | {"targets": [plain]})
    assert bad.status_code == 400 and "best_within_budget" in bad.json()["error"]["message"], bad.text
    assert api.get("/fine_tuning/jobs").json()["data"] == jobs_before
