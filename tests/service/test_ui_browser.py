"""The web UI in a real browser: Debian's headless Chromium driven by Selenium, against a
real server running a real small job.

Skipped, with the reason, where Selenium, Chromium or chromedriver is missing. Screenshots
(job list, job page, report.html, another owner's view) and the measured load time and
size go to ``$PRUNEPILOT_SCREENSHOTS`` (default: a pytest temporary directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._server import ALICE, BOB, Server, settings, tiny_spec

_CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
_DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    _SELENIUM = True
except ImportError:  # the dev extra is not installed
    _SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (_SELENIUM and _CHROMIUM and _DRIVER),
    reason="needs selenium (dev extra) and Debian's chromium and chromium-driver packages "
    f"(selenium: {_SELENIUM}, chromium: {_CHROMIUM}, chromedriver: {_DRIVER})",
)

# a job with a latency budget, so both scatters have a point per trial; a few seconds long
_SPEC = tiny_spec(
    name="ui <b>tiny</b> </script>",
    constraints={
        "flops": "60%",
        "latency_ms": "90%",
        "target": {"batch_size": 64, "threads": 1, "repeats": 10},
    },
    search={"trials": 6},
)


@pytest.fixture(scope="module")
def ui_server(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, so alice's job list holds only this module's jobs."""
    with Server(settings(tmp_path_factory.mktemp("ui-service"), concurrent_jobs=1)) as srv:
        yield srv


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and measurements go."""
    where = os.environ.get("PRUNEPILOT_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium saving downloads under ``tmp_path/downloads``."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(_CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1280,1000")
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(str(_DRIVER)), options=opts)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)


def _text(driver: WebDriver, element_id: str) -> str:
    """The element's rendered text, read in one script call (no stale element handles)."""
    return str(
        driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : null",
            element_id,
        )
    )


# The job page as a reader sees it, in one call (arguments[0]: a sha256 to look for).
_VIEW = """
const q = (sel) => Array.from(document.querySelectorAll(sel));
const text = (id) => document.getElementById(id).textContent.trim();
const chart = (id) => document.getElementById(id);
return {
  done: text("trials-done"),
  planned: text("trials-planned"),
  best: text("best"),
  points: Object.fromEntries(["scatter-macs", "scatter-latency"].map(
    (c) => [c, chart(c).getAttribute("data-points")])),
  canvases: Object.fromEntries(["scatter-macs", "scatter-latency"].map(
    (c) => [c, chart(c).querySelector("canvas") !== null])),
  ratios: q("#ratios tbody tr code").map((e) => e.textContent),
  finalists: q("#finalists tbody tr").map((r) => r.querySelector("td").textContent.trim()),
  notes: q("#finalists tbody tr").map(
    (r) => [r.querySelector("td").textContent.trim(), r.lastElementChild.textContent.trim()]),
  artifacts: q("#artifacts tr[data-artifact]").map((r) => r.dataset.artifact),
  sha_shown: document.getElementById("artifacts").textContent.includes(arguments[0]),
};
"""


def _fresh(driver: WebDriver, by: str, what: str, act: Callable[[Any], Any]) -> Any:
    """Find an element and act on it, finding it again if the page re-rendered it between
    the two (the job list refreshes every 2 s; tables redraw on events)."""
    for _ in range(20):
        try:
            return act(driver.find_element(by, what))
        except StaleElementReferenceException:
            time.sleep(0.05)
    return act(driver.find_element(by, what))


def _sign_in(driver: WebDriver, token: str) -> None:
    _wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "jobs").is_displayed())


def _screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page, not only the window."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(800, min(int(height) + 40, 4000)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def _errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _downloaded(folder: Path, name: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    path = folder / name
    while not (path.is_file() and not list(folder.glob("*.crdownload"))):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was not downloaded: {list(folder.iterdir())}")
        time.sleep(0.1)
    return path.read_bytes()


def test_the_ui_follows_a_real_job_to_its_charts_and_files(
    ui_server: Server, browser: WebDriver, shots: Path
) -> None:
    d = browser
    d.get(f"{ui_server.url}/ui")
    _sign_in(d, ALICE)
    assert _wait(d, lambda d: d.find_element(By.ID, "jobs-empty").is_displayed())

    with ui_server.client() as c:
        r = c.post("/jobs", json=_SPEC)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

    # the job appears in the list by itself (the list refreshes), with its status
    row = f'tr[data-job="{job_id}"]'
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, row))
    assert "ui <b>tiny</b> </script>" in _fresh(d, By.CSS_SELECTOR, row, lambda e: e.text)
    _fresh(d, By.CSS_SELECTOR, f"{row} a", lambda e: e.click())
    _wait(d, lambda d: d.find_element(By.ID, "job").is_displayed())
    assert d.current_url.endswith(f"/ui#/jobs/{job_id}")

    # progress moves live (the event stream) until the job succeeds
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 240
    while _text(d, "job-status") != "SUCCEEDED":
        assert _text(d, "job-status") not in ("FAILED", "CANCELLED"), _text(d, "job-error")
        assert time.monotonic() < deadline, f"the page did not show the job finishing: {seen}"
        now = (_text(d, "phase"), _text(d, "trials-done"), _text(d, "eta"))
        if not seen or seen[-1] != now:
            seen.append(now)
        time.sleep(0.05)
    done = {int(t) for _, t, _ in seen if t.isdigit()}
    assert len(done) >= 3, seen  # several trial counts shown on the way
    assert len({p for p, _, _ in seen}) >= 3, seen  # and several phases
    assert any(e.startswith(("about", "any moment", "trials done")) for _, _, e in seen), seen

    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#artifacts tr[data-artifact]"))
    with ui_server.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        trials = c.get(f"/jobs/{job_id}/trials").json()["trials"]
        artifacts = {a["name"]: a for a in c.get(f"/jobs/{job_id}/artifacts").json()}
        checkpoint = c.get(f"/jobs/{job_id}/artifacts/model.safetensors").content
    # what the page shows, read in one script call (atomic: the page's own code cannot
    # re-render between two reads, as it may between Selenium element look-ups), polled
    # until it matches: a last refresh after SUCCEEDED may still be redrawing the tables
    result = job["result"]
    # the page marks the first finalist whose config is the result's (as `chosenNumber`)
    chosen = next(f["number"] for f in result["finalists"] if f["config"] == result["config"])
    expected = {
        "done": str(job["trials_planned"]),
        "planned": str(job["trials_planned"]),
        "points": {c: str(len(trials)) for c in ("scatter-macs", "scatter-latency")},
        "canvases": {c: True for c in ("scatter-macs", "scatter-latency")},
        "ratios": list(result["config"]),
        "finalists": sorted(str(f["number"]) for f in result["finalists"]),
        # the chosen one marked; those that failed the final latency re-measurement say so
        "notes": sorted(
            [
                str(f["number"]),
                "chosen"
                if f["number"] == chosen
                else ("over the latency budget when re-measured" if not f["feasible"] else ""),
            ]
            for f in result["finalists"]
        ),
        "artifacts": sorted(artifacts),
        "sha_shown": True,
    }
    sha = artifacts["model.safetensors"]["sha256"]

    def shown(d: WebDriver) -> dict[str, Any]:
        view: dict[str, Any] = d.execute_script(_VIEW, sha)
        view["finalists"] = sorted(view["finalists"])
        view["artifacts"] = sorted(view["artifacts"])
        view["notes"] = sorted(view["notes"])
        return view

    deadline = time.monotonic() + 30
    while True:
        view = shown(d)
        if {k: view[k] for k in expected} == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {k: view[k] for k in expected} == expected
    assert abs(float(view["best"]) - job["best_score"]) <= 5e-5  # 4 decimals
    assert not _errors(d)
    _screenshot(d, shots / "job.png")

    # the download link returns the checkpoint (through fetch + Blob; sha256 checked)
    checkpoint_button = "//button[@class='link download' and text()='model.safetensors']"
    _fresh(d, By.XPATH, checkpoint_button, lambda e: e.click())
    got = _downloaded(d.downloads, "model.safetensors")  # type: ignore[attr-defined]
    assert got == checkpoint
    assert hashlib.sha256(got).hexdigest() == artifacts["model.safetensors"]["sha256"]
    note = 'tr[data-artifact="model.safetensors"] .note'
    _wait(d, lambda d: "sha256 verified" in _fresh(d, By.CSS_SELECTOR, note, lambda e: e.text))

    # report.html: downloaded, opened from disk, the same charts with no server
    report_button = "//button[@class='link download' and text()='report.html']"
    _fresh(d, By.XPATH, report_button, lambda e: e.click())
    page = _downloaded(d.downloads, "report.html")  # type: ignore[attr-defined]
    assert hashlib.sha256(page).hexdigest() == artifacts["report.html"]["sha256"]
    report = d.downloads / "report.html"  # type: ignore[attr-defined]
    d.get(report.as_uri())
    _wait(d, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    assert d.title == "prunepilot report: ui <b>tiny</b> </script>"
    for chart in ("scatter-macs", "scatter-latency"):
        assert d.find_element(By.ID, chart).get_attribute("data-points") == str(len(trials))
    assert len(d.find_elements(By.CSS_SELECTOR, "#finalists tbody tr")) == len(result["finalists"])
    assert not _errors(d)  # CSP violations would show here
    _screenshot(d, shots / "report.png")

    # load time: a fresh load of the job page until its charts are drawn with data
    t0 = time.perf_counter()
    d.get(f"{ui_server.url}/ui#/jobs/{job_id}")
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#artifacts tr[data-artifact]"))
    wall_ms = (time.perf_counter() - t0) * 1000
    mark_ms = d.execute_script(
        "const m = performance.getEntriesByName('pp:job-rendered');"
        "return m.length ? m[0].startTime : null"
    )
    assert mark_ms is not None and mark_ms < 5000, mark_ms
    # the token never travels in a URL: not in the page's, not in any request's
    urls = d.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    )
    assert urls and not any(ALICE in u for u in urls), urls
    assert any("/events" in u or "/trials" in u for u in urls)
    sizes = {}
    with ui_server.client(None) as anon:
        html = anon.get("/ui").text
        sizes["/ui"] = len(html.encode())
        for src in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html):
            sizes[src] = len(anon.get(src).content)
    metrics = {
        "job_page_rendered_ms": round(mark_ms, 1),
        "job_page_wall_ms": round(wall_ms, 1),
        "bytes": sizes,
        "total_bytes": sum(sizes.values()),
    }
    (shots / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"UI metrics: {json.dumps(metrics)}")

    # the job list with the finished job
    d.get(f"{ui_server.url}/ui#/")
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-status="SUCCEEDED"]'))
    _screenshot(d, shots / "jobs.png")
    assert not _errors(d)

    # another owner's token sees nothing: an empty list, and alice's job is not found
    d.find_element(By.ID, "signout").click()
    _sign_in(d, BOB)
    _wait(d, lambda d: d.find_element(By.ID, "jobs-empty").is_displayed())
    assert not d.find_elements(By.CSS_SELECTOR, "#jobs-body tr")
    assert "tiny" not in d.find_element(By.TAG_NAME, "body").text
    d.get(f"{ui_server.url}/ui#/jobs/{job_id}")
    _wait(d, lambda d: f"No job {job_id} for this token" in _text(d, "flash"))
    assert _text(d, "job-title") == "No such job"
    assert not d.find_elements(By.CSS_SELECTOR, "#artifacts tr[data-artifact]")
    assert d.find_element(By.ID, "scatter-macs").get_attribute("data-points") is None
    body = d.find_element(By.TAG_NAME, "body").text
    assert "tiny" not in body and job["phase"] not in body, body  # nothing of alice's job
    _screenshot(d, shots / "other-owner.png")


def test_cancel_and_delete_buttons(ui_server: Server, browser: WebDriver, shots: Path) -> None:
    d = browser
    with ui_server.client() as c:
        spec = tiny_spec(name="to cancel", search={"trials": 400}, finetune={"steps": 200})
        job_id = c.post("/jobs", json=spec).json()["id"]
    d.get(f"{ui_server.url}/ui#/jobs/{job_id}")
    _sign_in_to(d, job_id)
    cancel = d.find_element(By.ID, "cancel")
    _wait(d, lambda d: cancel.is_displayed())
    cancel.click()
    _wait(d, lambda d: d.switch_to.alert).accept()
    _wait(d, lambda d: _text(d, "job-status") == "CANCELLED", timeout=60)
    delete = d.find_element(By.ID, "delete")
    _wait(d, lambda d: delete.is_displayed())
    delete.click()
    _wait(d, lambda d: d.switch_to.alert).accept()
    _wait(d, lambda d: f"Deleted job {job_id}" in _text(d, "flash"))
    assert d.find_element(By.ID, "jobs").is_displayed()
    assert not d.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    with ui_server.client() as c:
        assert c.get(f"/jobs/{job_id}").status_code == 404


def _sign_in_to(driver: WebDriver, job_id: str) -> None:
    """Sign in as alice from a job's link; the page then shows that job."""
    try:
        _wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed(), timeout=10)
    except TimeoutException:
        return
    driver.find_element(By.ID, "token").send_keys(ALICE)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "job").is_displayed())
    assert _text(driver, "job-id") == job_id
