"""The web console as a person uses it, in headless Chromium (conftest.py): sign in with an API
key, the jobs list, a finished job's page (loss curve, eval, quote and bill, artifact download),
the create form's field errors, a job submitted from the form and watched to its end live, and
what another org, a missing CSRF token and a bad key get. The job the list and page show is
trained once for the module by the real worker, on the tiny LFM2 base."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from api.console.pages import usd
from domain.gate_policy import gate_refusing_nothing
from infra.db import session_scope
from services import model_registry
from tests.api.console.conftest import csrf_of, screenshot, signed_in_client
from tests.api.helpers import jsonl, sentiment_rows
from tests.conftest import new_key
from tests.support.job_rows import new_job
from tests.support.ledger import org_of, rows_of
from tests.worker.test_end_to_end import wait_for

pytestmark = pytest.mark.slow
TERMINAL = ("succeeded", "failed", "cancelled")
# Small and quick: 24 rows, two epochs, and a gate that only asks for the evidence (the page shows
# its verdict either way; test_end_to_end holds the default gate), so the version can take `prod`.
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10}
LENIENT_GATE = gate_refusing_nothing()


@pytest.fixture(scope="module")
def finished_job(server, owner_key, worker, tiny_base) -> Any:
    """One job of the owner's org, trained to its end (laptop-cpu: a GGUF scored in llama.cpp)."""
    client = openai.OpenAI(base_url=server.base_url, api_key=owner_key, max_retries=0)
    train = client.files.create(
        file=("train.jsonl", io.BytesIO(jsonl(sentiment_rows(24)))), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model=tiny_base,
        training_file=train.id,
        seed=7,
        suffix="console",
        method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},
        extra_body={"targets": ["laptop-cpu"], "gate": LENIENT_GATE, "checkpoints": {"select": "last"}},
    )
    return wait_for(client, job.id, TERMINAL[:2], timeout=1500)


DATASET_LABELS = ["positive", "negative"]
DATASET_SEEDS = [
    {"input": "Works perfectly and the battery lasts all week.", "output": "positive"},
    {"input": "Great value, I would buy it again.", "output": "positive"},
    {"input": "The sound is clear and it arrived a day early.", "output": "positive"},
    {"input": "It broke after two days and support never answered.", "output": "negative"},
    {"input": "Cheap plastic, the lid does not even close.", "output": "negative"},
    {"input": "Stopped charging within a week, waste of money.", "output": "negative"},
]


@pytest.fixture(scope="module")
def finished_dataset(server, owner_key, worker) -> dict[str, Any]:
    """A synthetic dataset of the owner's org, made by the bundled teacher (as
    tests/api/test_synthetic_datasets.py makes it: 16 asked reach the floor)."""
    api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {owner_key}"}, timeout=60)
    task = {
        "type": "classification",
        "description": "Classify the sentiment of a short customer product review.",
        "labels": DATASET_LABELS,
        "num_examples": 16,
        # three of the customer's own per label: the teacher writes lists like them, and is asked
        # them back as rows known to be right
        "seed_examples": DATASET_SEEDS,
    }
    created = api.post("/synthetic_datasets", json={"task": task, "seed": 5})
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        ds = api.get(f"/synthetic_datasets/{created.json()['id']}").json()
        if ds["status"] in TERMINAL:
            return ds
        time.sleep(1)
    raise AssertionError(f"dataset still {ds['status']} after 900 s")


@pytest.fixture()
def signed_in(browser, console_url, owner_key) -> webdriver.Chrome:
    """The browser signed in as the owner (each test on its own: none relies on another's state)."""
    sign_in(browser, console_url, owner_key)
    by_id(browser, "sign-out")
    return browser


def wait(browser: webdriver.Chrome, until: Callable[[webdriver.Chrome], Any], timeout: float = 20) -> Any:
    # htmx swaps the live part in and out: an element found a moment ago may be gone
    return WebDriverWait(
        browser, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(until)


def by_id(browser: webdriver.Chrome, element_id: str, timeout: float = 20) -> Any:
    return wait(browser, lambda b: b.find_element(By.ID, element_id), timeout)


def sign_in(browser: webdriver.Chrome, console_url: str, key: str) -> None:
    browser.get(f"{console_url}/signin")
    by_id(browser, "api_key").send_keys(key)
    browser.find_element(By.ID, "sign-in").click()


def cells(row: Any) -> list[str]:
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def test_a_bad_key_is_refused_with_a_message(browser, console_url) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console_url}/")  # signed out: the console sends you to sign in
    wait(browser, lambda b: b.current_url.endswith("/console/signin"))
    screenshot(browser, "sign-in")
    sign_in(browser, console_url, "et-not-a-key")
    assert by_id(browser, "sign-in-error").text == "Incorrect API key provided."
    assert browser.get_cookie("et_console") is None


def test_sign_in_lists_the_orgs_jobs(browser, console_url, owner_key, finished_job) -> None:
    sign_in(browser, console_url, owner_key)
    table = by_id(browser, "jobs")
    row = table.find_element(By.CSS_SELECTOR, f'tr[data-job="{finished_job.id}"]')
    job_cell, model, status, stage, cost, created = cells(row)
    assert job_cell.startswith(finished_job.id) and model == finished_job.model
    assert status == finished_job.status and stage == (finished_job.model_extra["stage"] or "-")
    assert cost == usd(finished_job.model_extra["total_cost_usd"]) and float(cost[1:]) > 0
    assert created.endswith(" UTC")
    # the key is traded for a session token: HttpOnly, SameSite=Strict, not the key, not in storage
    cookie = browser.get_cookie("et_console")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert owner_key not in cookie["value"] and owner_key not in browser.page_source
    assert browser.execute_script("return document.cookie") == ""
    # browser storage holds at most htmx's note of the current path: no key, no copy of a page
    stored = browser.execute_script("return Object.assign({}, {...localStorage}, {...sessionStorage})")
    assert set(stored) <= {"htmx-current-path-for-history"} and owner_key not in str(stored), stored
    screenshot(browser, "jobs")


def test_the_job_page_shows_the_run_its_eval_bill_and_downloads(
    signed_in, console_url, server, owner_key, finished_job, tiny_base
) -> None:
    browser = signed_in
    browser.get(f"{console_url}/jobs/{finished_job.id}")
    assert by_id(browser, "job-status").text == finished_job.status
    stages = {c[0]: c[1] for c in map(cells, browser.find_elements(By.CSS_SELECTOR, "#stages tr")[1:])}
    assert list(stages) == ["prepare", "synthesize", "train", "evaluate", "export", "gate", "publish"]
    assert set(stages.values()) == {"done"}  # synthesize too: a no-op for an uploaded file
    # the loss curve is drawn (inline SVG), one point per logged step
    points = browser.find_element(By.CSS_SELECTOR, "#loss-curve svg polyline").get_attribute("points")
    assert points is not None and len(points.split()) >= 2
    # bare base, prompted base, fine-tune and the GGUF in llama.cpp, each a 0-1 score with its CI
    rows = [cells(r) for r in browser.find_elements(By.CSS_SELECTOR, "#eval-scores tr")[1:]]
    subjects = [r[0] for r in rows]
    assert (
        subjects[0] == "base" and subjects[1].startswith("base-prompted (k=") and subjects[2] == "fine-tuned"
    )
    assert "laptop-cpu" in subjects
    for row in rows:
        low, high = (float(x) for x in row[3].split("–"))
        assert 0 <= low <= float(row[2]) <= high <= 1 and int(row[4]) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#scores-plot svg rect")
    assert "Gate passed" in by_id(browser, "gate").text or "Gate failed" in by_id(browser, "gate").text
    assert by_id(browser, "bill-total").text == usd(finished_job.model_extra["total_cost_usd"])
    assert by_id(browser, "quote-total").text.startswith("$")
    screenshot(browser, "job")

    rest = httpx.get(
        f"{server.base_url}/artifacts",
        params={"job_id": finished_job.id},
        headers={"Authorization": f"Bearer {owner_key}"},
    ).json()["data"]
    links = browser.find_elements(By.CSS_SELECTOR, "#artifacts a.download")
    assert len(links) == len(rest) >= 1
    cookies = {"et_console": browser.get_cookie("et_console")["value"]}
    gguf = next(a for a in rest if a["target"] == "laptop-cpu")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-artifact="{gguf["id"]}"]')
    assert 0 <= float(cells(row)[5].split()[0]) <= 1  # its own eval, scored in llama.cpp
    href = row.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    body = httpx.get(href, cookies=cookies, timeout=60)
    assert body.status_code == 200 and len(body.content) == gguf["bytes"] and body.content[:4] == b"GGUF"
    assert hashlib.sha256(body.content).hexdigest() == gguf["sha256"] == body.headers["x-edgetune-sha256"]
    manifest_href = row.find_element(By.CSS_SELECTOR, "a.manifest").get_attribute("href")
    manifest = httpx.get(manifest_href, cookies=cookies).json()
    assert manifest["job_config"]["model"] == tiny_base and manifest["job_config_sha256"]
    # the same link without the session: the sign-in page, not the bytes
    anonymous = httpx.get(href)
    assert anonymous.status_code == 303 and anonymous.headers["location"].endswith("/console/signin")


def _failed_version(owner_key: str, model_name: str) -> int:
    """A gate-failed version of the model, as the publish stage records one (no training)."""
    job_id, org_id = new_job(owner_key, "failed"), org_of(owner_key)
    with session_scope() as session:
        version = model_registry.record_version(
            session,
            org_id=org_id,
            job_id=job_id,
            model_name=model_name,
            fine_tuned_model=None,
            gate={"passed": False, "checks": []},
            gate_passed=False,
            artifact_ids=[],
        )
        return version.version


def test_the_registry_moves_prod_only_to_a_version_that_passed(
    signed_in, console_url, owner_key, finished_job
) -> None:
    browser = signed_in
    failed = _failed_version(owner_key, "console")  # the finished job's suffix names its model
    browser.get(f"{console_url}/registry")
    by_id(browser, "models").find_element(By.CSS_SELECTOR, 'tr[data-model="console"] a').click()
    versions = {
        c[0]: c[2] for c in map(cells, by_id(browser, "versions").find_elements(By.TAG_NAME, "tr")[1:])
    }
    assert versions[f"v{failed}"] == "failed" and len(versions) == 2

    def move_prod_to(version: int) -> None:
        Select(by_id(browser, "version")).select_by_value(str(version))
        browser.find_element(By.ID, "set-alias").click()
        wait(browser, lambda b: b.execute_script("return document.readyState") == "complete")

    move_prod_to(failed)
    assert "failed its eval gate" in by_id(browser, "alias-error").text
    assert browser.find_elements(By.ID, "no-aliases")
    screenshot(browser, "registry-refused")
    passed = next(int(v[1:]) for v, gate in versions.items() if gate == "passed")  # the finished job's
    move_prod_to(passed)
    wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, '[data-alias="prod"]'))
    assert browser.find_element(By.CSS_SELECTOR, '[data-alias="prod"]').text == f"prod → v{passed}"
    assert not browser.find_elements(By.ID, "alias-error")


def test_the_usage_page_shows_the_jobs_bill(signed_in, console_url, finished_job) -> None:
    browser = signed_in
    browser.get(f"{console_url}/usage")
    row = by_id(browser, "usage-by-job").find_element(By.CSS_SELECTOR, f'tr[data-job="{finished_job.id}"]')
    assert cells(row)[1] == usd(finished_job.model_extra["total_cost_usd"]) and "train" in cells(row)[2]
    # the page shows dollars to 4 places; rounding is monotone, so the org's total as shown is at
    # least this job's bill as shown
    billed = finished_job.model_extra["total_cost_usd"]
    assert float(by_id(browser, "usage-total").text[1:]) >= float(usd(billed)[1:]) and billed > 0
    assert by_id(browser, "invoice-total").text == by_id(browser, "usage-total").text
    assert by_id(browser, "budget-left").text == "No org budget set"
    assert browser.find_elements(By.CSS_SELECTOR, "#usage-by-day .bar")
    screenshot(browser, "usage")


def test_two_jobs_side_by_side(signed_in, console_url, owner_key, finished_job) -> None:
    browser = signed_in
    queued = new_job(owner_key, "queued")  # nothing scored or billed yet
    browser.get(f"{console_url}/")
    Select(by_id(browser, "compare-form").find_element(By.NAME, "b")).select_by_value(queued)
    Select(browser.find_element(By.CSS_SELECTOR, "#compare-form [name=a]")).select_by_value(finished_job.id)
    browser.find_element(By.CSS_SELECTOR, "#compare-form button").click()
    head = [th.text for th in by_id(browser, "compare").find_elements(By.CSS_SELECTOR, "tr:first-child th")]
    assert head[1:] == [finished_job.id, queued]
    billed = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#compare td.billed")]
    assert billed == [usd(finished_job.model_extra["total_cost_usd"]), usd(0.0)]
    for subject in ("base", "fine-tuned", "laptop-cpu"):
        row = cells(browser.find_element(By.CSS_SELECTOR, f'tr.score[data-subject="{subject}"]'))
        assert 0 <= float(row[1].split()[0]) <= 1 and row[2] == "-"
    screenshot(browser, "compare")


def _upload(browser: webdriver.Chrome, path: Path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))


def _plan(browser: webdriver.Chrome) -> None:
    browser.find_element(By.ID, "plan").click()
    wait(browser, lambda b: b.execute_script("return document.readyState") == "complete")


def test_the_create_form_shows_each_fields_error_where_it_belongs(
    signed_in, console_url, owner_key, tmp_path
) -> None:
    browser = signed_in
    good, bad = tmp_path / "train.jsonl", tmp_path / "broken.jsonl"
    good.write_bytes(jsonl(sentiment_rows(48)))
    bad.write_bytes(jsonl([*sentiment_rows(3), "not json", {"messages": []}]))
    browser.get(f"{console_url}/jobs/new")
    by_id(browser, "model").send_keys("LiquidAI/NoSuchModel")
    _upload(browser, good)
    by_id(browser, "n_epochs").send_keys("many")
    _plan(browser)
    assert "valid integer" in by_id(browser, "error-n_epochs").text
    assert by_id(browser, "uploaded").text.startswith("Uploaded as file-")  # kept: no second upload
    screenshot(browser, "new-job-errors")

    epochs = by_id(browser, "n_epochs")
    epochs.clear()
    epochs.send_keys("1")
    _plan(browser)
    assert "unknown base model 'LiquidAI/NoSuchModel'" in by_id(browser, "error-model").text
    assert not browser.find_elements(By.ID, "error-n_epochs") and not browser.find_elements(
        By.ID, "submit-job"
    )

    _upload(browser, bad)
    _plan(browser)
    message = by_id(browser, "error-file").text
    assert "2 invalid row(s)" in message and "line 4" in message and "line 5" in message

    browser.get(f"{console_url}/jobs/new")
    by_id(browser, "task_description").send_keys("Classify reviews.")
    by_id(browser, "task_labels").send_keys("only-one")
    by_id(browser, "model").send_keys("test/tiny-lfm2")
    _plan(browser)
    assert "labels" in by_id(browser, "error-task_labels").text


def test_a_job_submitted_from_the_form_is_watched_to_its_end_live(
    signed_in, console_url, server, owner_key, tiny_base, worker, tmp_path
) -> None:
    browser = signed_in
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl(sentiment_rows(48)))
    browser.get(f"{console_url}/jobs/new")
    by_id(browser, "model").send_keys(tiny_base)
    _upload(browser, train)
    for box in browser.find_elements(By.CSS_SELECTOR, "input[name=targets]"):
        if box.is_selected() != (box.get_attribute("value") == "gpu-server"):
            box.click()
    by_id(browser, "n_epochs").send_keys("1")
    _plan(browser)
    assert by_id(browser, "quote-total").text.startswith("$")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#quote tr")) > 2
    screenshot(browser, "new-job-plan")
    browser.find_element(By.ID, "submit-job").click()
    wait(browser, lambda b: "/console/jobs/ftjob-" in b.current_url)
    job_id = browser.current_url.rsplit("/", 1)[-1]

    seen: list[tuple[str, str]] = []  # (status, stage) as the page shows them, without a reload
    streamed = 0  # events static/live.js received on the job's stream before the page reloaded
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            count = browser.execute_script("return document.documentElement.getAttribute('data-live-events')")
            streamed = max(streamed, int(count or 0))
            status = browser.find_element(By.ID, "job-status").text
            stages = browser.find_elements(By.ID, "job-stage")
            now = (status, stages[0].text if stages else "")
        except StaleElementReferenceException:  # htmx swapped the part in between
            continue
        if not seen or seen[-1] != now:
            seen.append(now)
        if status in TERMINAL:
            break
        time.sleep(0.2)
    assert seen[0][0] in ("queued", "running") and seen[-1][0] in TERMINAL, seen
    assert len({stage for _, stage in seen}) >= 3, seen  # the stages went by on the page
    # they came over the event stream (polling is only a fallback every 10 s here)
    assert streamed >= 3, streamed
    # once ended, the page reloads once with everything and stops polling
    wait(browser, lambda b: b.find_element(By.ID, "live").get_attribute("hx-trigger") is None)
    assert browser.find_element(By.ID, "job-status").text == seen[-1][0]
    assert browser.find_elements(By.ID, "artifacts") or seen[-1][0] != "succeeded"
    screenshot(browser, "job-finished-live")
    client = openai.OpenAI(base_url=server.base_url, api_key=owner_key, max_retries=0)
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == seen[-1][0] and job.targets == ["gpu-server"]  # type: ignore[attr-defined]
    assert job.hyperparameters.n_epochs == 1


def test_a_datasets_page_shows_what_was_kept_dropped_and_why(
    signed_in, console_url, finished_dataset
) -> None:
    browser, ds, report = signed_in, finished_dataset, finished_dataset["report"]
    assert ds["status"] == "succeeded", ds["error"]
    browser.get(f"{console_url}/datasets")
    row = by_id(browser, "datasets").find_element(By.CSS_SELECTOR, f'tr[data-dataset="{ds["id"]}"]')
    _, task_type, status, kept, cost, _ = cells(row)
    assert (task_type, status, kept) == ("classification", "succeeded", f"{report['kept']} / 16")
    assert cost == usd(ds["total_cost_usd"])
    screenshot(browser, "datasets")
    row.find_element(By.TAG_NAME, "a").click()

    assert by_id(browser, "dataset-status").text == "succeeded"
    assert by_id(browser, "dataset-kept").text == str(report["kept"])
    drops = {
        tr.get_attribute("data-reason"): int(cells(tr)[1])
        for tr in browser.find_elements(By.CSS_SELECTOR, "#drop-reasons tr[data-reason]")
    }
    assert drops == report["dropped_by_reason"]
    balance = {
        tr.get_attribute("data-key"): cells(tr)[1:3]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#balance tr[data-key]")
    }
    assert balance == {k: [str(v["train"]), str(v["eval"])] for k, v in report["label_distribution"].items()}
    assert set(balance) == set(DATASET_LABELS)
    # the stored training rows, as the file holds them: every answer one of the labels
    answers = [cells(tr)[2] for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tr")[1:]]
    assert len(answers) == min(report["train"], 25) and set(answers) <= set(DATASET_LABELS)
    rounds = browser.find_elements(By.CSS_SELECTOR, "#rounds tr")[1:]
    assert len(rounds) == len(report["rounds"])
    # the round trip: the rows' agreement, a guess's, the customer's own examples', and what they mean
    trip = report["round_trip"]
    said = by_id(browser, "round-trip").text
    assert (
        f"agreed with {trip['agreed']} of {trip['checked']} rows" in said
        and "guessing would agree with 50%" in said
    )
    assert by_id(browser, "round-trip-seeds").text == f"{trip['seeds']['agreed']} of your 6 own examples"
    notes = browser.find_elements(By.ID, "round-trip-note")
    assert [n.text for n in notes] == (
        [trip["note"][:1].upper() + trip["note"][1:] + "."] if "note" in trip else []
    )
    screenshot(browser, "dataset")


def test_the_playground_puts_the_fine_tune_beside_its_base(
    signed_in, console_url, owner_key, finished_job, tiny_base
) -> None:
    browser = signed_in
    assert finished_job.status == "succeeded" and finished_job.fine_tuned_model
    before = {r.id for r in rows_of(org_of(owner_key))}
    browser.get(f"{console_url}/jobs/{finished_job.id}")
    by_id(browser, "try-it").click()
    selected = Select(by_id(browser, "model")).first_selected_option
    assert selected.get_attribute("value") == finished_job.fine_tuned_model

    by_id(browser, "ask").click()  # no prompt: said next to the field, nothing generated
    assert "Write a prompt" in by_id(browser, "prompt-error").text

    by_id(browser, "prompt").send_keys("I love this product, it works perfectly.")
    max_tokens = by_id(browser, "max_tokens")
    max_tokens.clear()
    max_tokens.send_keys("8")
    by_id(browser, "ask").click()
    by_id(browser, "answers", timeout=300)
    answers = {
        td.get_attribute("data-role"): td
        for td in browser.find_elements(By.CSS_SELECTOR, "#answers td.answer")
    }
    assert set(answers) == {"fine-tune", "base"}
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#answers th")]
    assert heads == [f"fine-tune: {finished_job.fine_tuned_model}", f"base: {tiny_base}"]
    for role, td in answers.items():
        assert not td.find_elements(By.CLASS_NAME, "error-box"), (role, td.text)
    usage = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#answers td.usage")]
    counts = [re.fullmatch(r"(\d+) prompt \+ (\d+) completion tokens, [0-9.]+ s", u) for u in usage]
    assert all(m and int(m[1]) > 0 and int(m[2]) <= 8 for m in counts), usage
    # the fine-tune answers under its grammar: one of the labels it was trained on
    assert answers["fine-tune"].text in ("positive", "negative"), answers["fine-tune"].text
    # both answers billed as chat completions, the fine-tune's with its job
    new = [r for r in rows_of(org_of(owner_key)) if r.id not in before]
    assert {r.stage for r in new} == {"inference"} and {r.job_id for r in new} == {finished_job.id, None}
    assert all(r.amount_usd > 0 for r in new)
    screenshot(browser, "playground")

    # another org naming this model gets the API's 404 where the answer would be, and no base
    other = signed_in_client(console_url, new_key())
    form = {
        "model": finished_job.fine_tuned_model,
        "prompt": "Hello",
        "max_tokens": "4",
        "compare_base": "true",
    }
    r = other.post("/playground", data=form | {"csrf_token": csrf_of(other.get("/playground").text)})
    assert r.status_code == 200 and "does not exist or you do not have access to it" in r.text
    assert 'data-role="base"' not in r.text


def test_another_orgs_job_shows_nothing_of_it(signed_in, console_url, finished_job) -> None:
    browser = signed_in
    by_id(browser, "sign-out").click()  # signed out: back to the form, the cookie gone
    wait(browser, lambda b: b.current_url.endswith("/console/signin"))
    assert browser.get_cookie("et_console") is None
    sign_in(browser, console_url, new_key())
    assert by_id(browser, "no-jobs").text == "No jobs yet."
    mine = f"/jobs/{finished_job.id}"
    for path in (
        mine,
        f"{mine}/live",
        "/registry/console",
        f"/compare?a={finished_job.id}&b={finished_job.id}",
    ):
        browser.get(f"{console_url}{path}")
        assert by_id(browser, "error-title").text == "Not found"
        page = browser.page_source
        assert finished_job.model not in page and finished_job.status not in page and "loss" not in page
        assert not finished_job.fine_tuned_model or finished_job.fine_tuned_model not in page
    screenshot(browser, "other-org-404")


def test_forms_without_the_csrf_token_are_refused(console_url, server, owner_key) -> None:
    client = signed_in_client(console_url, owner_key)
    jobs_before = len(client.get("/").text.split('data-job="')) - 1
    for path, data in (("/signout", {}), ("/jobs/new", {"model": "test/tiny-lfm2", "action": "submit"})):
        for form in (data, data | {"csrf_token": "forged"}):
            r = client.post(path, data=form)
            assert r.status_code == 403 and "CSRF token is missing or wrong" in r.text, r.text
    other = signed_in_client(console_url, new_key())  # a real token, of another session
    r = client.post("/signout", data={"csrf_token": csrf_of(other.get("/").text)})
    assert r.status_code == 403
    page = client.get("/")  # still signed in, nothing created
    assert page.status_code == 200 and len(page.text.split('data-job="')) - 1 == jobs_before

    # bad input through the real form: a 400 page with the field's error, never a 500
    r = client.post("/jobs/new", data={"csrf_token": csrf_of(page.text), "model": "", "action": "plan"})
    assert r.status_code == 400 and 'id="error-model"' in r.text
    # the sign-in form is held to its own double-submit token
    fresh = httpx.Client(base_url=console_url)
    r = fresh.post("/signin", data={"api_key": owner_key, "csrf_token": "x"})
    assert r.status_code == 401 and "sign in again" in r.text and "et_console" not in fresh.cookies


def test_the_devices_page_makes_an_agent_and_shows_what_it_measured(
    signed_in, console_url, server, owner_key, finished_job
) -> None:
    """A person makes an agent for a profile (key shown once, with the command to run), runs it on
    "the device" (this machine), and sees it online and its measurement of the job's GGUF."""
    import subprocess
    import sys

    browser = signed_in
    browser.get(f"{console_url}/devices")
    by_id(browser, "create-agent").click()  # no name: the page says so, nothing is made
    assert "give the agent a name" in by_id(browser, "agent-error").text
    by_id(browser, "agent-name").send_keys("pi-console")
    Select(by_id(browser, "agent-profile")).select_by_value("raspberry-pi-5")
    browser.find_element(By.ID, "create-agent").click()
    key = by_id(browser, "agent-key").text.strip()
    assert key.startswith("etagent-") and key in by_id(browser, "agent-command").text
    screenshot(browser, "devices-agent-created")

    api = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {owner_key}"}, timeout=60)
    gguf = next(
        a
        for a in api.get("/artifacts", params={"job_id": finished_job.id}).json()["data"]
        if a["format"] == "gguf"
    )
    bench = api.post(
        "/device_benchmarks", json={"artifact_id": gguf["id"], "profile": "raspberry-pi-5"}
    ).json()
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "device-agent",
        "--profile",
        "raspberry-pi-5",
        "--api",
        server.base_url,
    ]
    # measured with llama.cpp's llama-bench binary: no load time or memory, which the page shows as "-"
    bench_bin = str(Path(sys.executable).with_name("llama-bench"))
    run = subprocess.run(
        [*cmd, "--key", key, "--threads", "1", "--once", "--llama-bench", bench_bin],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "1 task(s) measured" in run.stdout, run.stderr[-2000:]

    browser.get(f"{console_url}/devices")
    agent_row = cells(by_id(browser, "agents").find_elements(By.TAG_NAME, "tr")[1])
    assert agent_row[1] == "raspberry-pi-5" and agent_row[2] == "online" and "1 threads" in agent_row[3]
    row = by_id(browser, "benchmarks").find_element(By.CSS_SELECTOR, f'tr[data-benchmark="{bench["id"]}"]')
    assert cells(row)[2] == "succeeded" and float(cells(row)[3]) > 0 and "pi-console" in cells(row)[7]
    # prefill measured; no memory and no load time from llama-bench
    assert float(cells(row)[4]) > 0 and cells(row)[5] == "-" and cells(row)[6] == "-"
    assert key not in browser.page_source  # the key was shown once, on the response that made it
    screenshot(browser, "devices")
