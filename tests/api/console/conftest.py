"""The console in a real browser: Debian's Chromium, headless, driven through its chromedriver by
Selenium, against the live API (tests/conftest.py `server`) and a real Celery worker. The driver is
started from its path (no Selenium Manager, nothing downloaded at test time); `make install`
installs the two apt packages when /usr/bin/chromium is missing.

Each page the tests visit is saved as a PNG under var/screenshots/console/ for review."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from infra.settings import get_settings
from tests.conftest import ROOT, new_key, running_worker

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "var" / "screenshots" / "console"


@pytest.fixture(scope="module")
def console_url(server) -> str:
    return server.base_url.removesuffix("/v1") + "/console"


@pytest.fixture(scope="module", autouse=True)
def fast_live_updates(platform) -> Iterator[None]:
    """The event stream looks for new events every event_stream_poll_s, 0.25 s here; the job page's
    fallback polling runs every 2 x 20 x that, 10 s."""
    settings = get_settings()
    before, settings.event_stream_poll_s = settings.event_stream_poll_s, 0.25
    yield
    settings.event_stream_poll_s = before


@pytest.fixture(scope="module")
def worker(platform, tiny_base) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker({}, platform.var_dir / "worker-console.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run `make install` (apt: chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def signed_in_client(console_url: str, api_key: str) -> httpx.Client:
    """An HTTP client holding a console session cookie, signed in through the form as a browser is."""
    client = httpx.Client(base_url=console_url, timeout=60)
    form = client.get("/signin")
    r = client.post("/signin", data={"api_key": api_key, "csrf_token": csrf_of(form.text)})
    assert r.status_code == 303 and r.headers["location"].endswith("/console/"), r.text
    return client


@pytest.fixture(scope="module")
def owner_key(platform) -> str:
    return new_key()
