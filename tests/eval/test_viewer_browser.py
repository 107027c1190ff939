"""The trajectory viewer in a real headless browser (Debian's chromium + chromedriver).

Skipped when chromium, chromedriver or selenium is missing. Screenshots go to pytest's tmp
dir (``MEDAGENTGYM_SCREENSHOTS=DIR`` keeps them somewhere else).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from medagentgym.eval import viewer

from .synth import code_step, failure_zoo, traj, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="chromium and chromedriver are not installed")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={profile}", "--window-size=1400,900"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as exc:  # a broken browser install is an environment problem
        pytest.skip(f"chromium did not start: {exc}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    evil = "print('<img src=x onerror=alert(1)>')\nanswer = len([1, 2, 3])  # </script>"
    a = write_run(root / "run_a", [
        traj("mimic-count-1", success=True, steps=[code_step(
            1, evil, observation="<img src=x onerror=alert(1)>", correct=True,
            model_output="I will count the rows.\n<b>bold?</b>")]),
        traj("mimic-count-2", success=False),
        *failure_zoo("eicu").values()])
    b = write_run(root / "run_b", [traj("mimic-count-1", model="model-b", success=False),
                                   traj("npower-1", dataset="npowerai", category="ttest",
                                        model="model-b", success=True)])
    return [a, b]


@pytest.fixture
def shots(tmp_path) -> Path:
    out = Path(os.environ.get("MEDAGENTGYM_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait(driver, condition, timeout=30):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page replaces the detail pane while an episode loads: retry stale reads
    return WebDriverWait(driver, timeout, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition)


def _rows(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#rows tr")


def _select(driver, element_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def _exercise(driver, shots: Path, name: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert len(_rows(driver)) == 15
    assert driver.find_element(By.ID, "count").text == "15 of 15 episodes"

    _select(driver, "f-dataset", "eicu")
    assert len(_rows(driver)) == 11
    _select(driver, "f-outcome", "infrastructure")
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in _rows(driver)] == ["z-infra"]
    _select(driver, "f-outcome", "failure")
    assert len(_rows(driver)) == 9  # every failure category but infra; no success
    _select(driver, "f-outcome", "stuck_in_loop")
    loop_row = _rows(driver)[0]
    assert "stuck in a loop" in loop_row.text
    loop_row.click()
    _wait(driver, lambda d: "z-loop" in d.find_element(By.ID, "ep-title").text)
    turns = driver.find_elements(By.CSS_SELECTOR, "#detail .turn")
    assert len(turns) == 3
    assert "NameError" in turns[0].find_element(By.CSS_SELECTOR, ".observation").text

    # reset, then filter by model and open the episode with hostile text
    _select(driver, "f-dataset", "")
    _select(driver, "f-outcome", "")
    _select(driver, "f-model", "model-a")
    _select(driver, "f-dataset", "mimic_iii")
    _select(driver, "f-category", "count")
    rows = _rows(driver)
    assert len(rows) == 2 and all("model-a" in r.text for r in rows)
    rows[0].click()
    _wait(driver, lambda d: "mimic-count-1" in d.find_element(By.ID, "ep-title").text)
    turn = driver.find_element(By.CSS_SELECTOR, "#detail .turn")
    assert turn.find_element(By.CSS_SELECTOR, ".action-name").text == "validate_code"
    assert turn.find_element(By.CSS_SELECTOR, ".reward").text == "reward 1.00"
    code = turn.find_element(By.CSS_SELECTOR, "pre.code")
    assert "answer = len([1, 2, 3])" in code.text
    assert len(code.find_elements(By.CSS_SELECTOR, "span")) > 3  # highlighted tokens
    obs = turn.find_element(By.CSS_SELECTOR, ".observation")
    assert obs.text == "<img src=x onerror=alert(1)>"  # shown as text ...
    assert not driver.find_elements(By.CSS_SELECTOR, "#detail img")  # ... never as markup
    # the model's output is shown expanded (what one reads when a model cannot follow the
    # format), as text, never as markup
    assert turn.find_element(By.CSS_SELECTOR, "details.sec").get_attribute("open") is not None
    assert "<b>bold?</b>" in turn.find_element(By.CSS_SELECTOR, ".model-output").text
    assert "correct" in turn.find_element(By.CSS_SELECTOR, ".grade").text
    assert driver.find_element(By.ID, "ep-meta").text.count("model-a") == 1
    path = shots / f"viewer-{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


def test_viewer_server_in_browser(browser, run_dirs, shots):
    server = viewer.make_server(run_dirs, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        browser.get(f"http://{host}:{port}/")
        _exercise(browser, shots, "server")
        # a deep link opens the episode directly
        browser.get(f"http://{host}:{port}/#ep=0")
        from selenium.webdriver.common.by import By

        _wait(browser, lambda d: d.find_elements(By.ID, "ep-title"))
    finally:
        server.shutdown()
        server.server_close()


def test_viewer_static_page_in_browser(browser, run_dirs, shots, tmp_path):
    page = viewer.write_static(run_dirs, tmp_path / "view.html")
    browser.get(page.as_uri())
    _exercise(browser, shots, "static")
