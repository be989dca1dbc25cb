"""The dashboard page in a real browser: Debian's chromium, headless, driven by selenium through Debian's
chromium-driver (no browser or driver download; ``make test`` installs both).

A thread feeds a slow session's events into a Board served by a WebServer (with a token); the page, loaded
once, shows the session as receiving, then done, with its thumbnail, its warning text and the QA deviation
in words, without a reload (the screenshot is saved as tests/artifacts/dashboard.png); then "Accept as
reference" sends the token in a header and the card turns to the new QA result.
"""
import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from web import Board, WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TOKEN = "browser-test-token"
SID = "5e55a1"
WAIT_S = 20.0


def thumbnail_png() -> bytes:
    image = Image.linear_gradient("L").resize((96, 96))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def slow_session(board: Board, seen_receiving: threading.Event) -> None:
    """About 3 s of a session's events; the second half waits until the page has shown 'receiving'."""
    start = time.time()

    def progress(state: str, step: int) -> None:
        board.emit({"type": "session_progress", "id": SID, "state": state, "acquisitions": 64 * step,
                    "images_in": 0, "images_out": 0, "bytes_in": 8_000_000 * step, "bytes_out": 0,
                    "elapsed": time.time() - start})

    board.emit({"type": "session_started", "id": SID, "peer": "192.168.2.10:52622", "time": start})
    board.emit({"type": "session_header", "id": SID, "station": "AWP-Test", "protocol": "gre_field_map",
                "module": "simplefft", "config": "simplefft", "summary": "Siemens, protocol 'gre_field_map'",
                "patient": {"name": "Doe^Jane", "id": "PID-12345", "birth_date": "1970-01-01"}})
    board.emit({"type": "session_qa", "id": SID, "qa": {
        "status": "FAIL", "deviations": [{"name": "TR", "actual": "6.0 ms", "expected": "5.2 ms"}],
        "text": "QA FAIL: TR: is 6.0 ms, expected 5.2 ms", "source": "references", "reference_count": 3}})
    progress("receiving", 1)
    time.sleep(0.5)
    board.emit({"type": "session_thumbnail", "id": SID, "png": thumbnail_png()})
    progress("receiving", 2)
    board.emit({"type": "session_text", "id": SID, "level": "WARNING", "text": "[module 'simplefft'] 2 readouts "
                "outside the encoded matrix were left out"})
    seen_receiving.wait(WAIT_S)
    for step in (3, 4):
        time.sleep(0.5)
        progress("receiving", step)
    time.sleep(0.5)
    progress("reconstructing", 4)
    time.sleep(1.0)
    board.emit({"type": "session_ended", "id": SID, "state": "done", "module": "simplefft",
                "elapsed": time.time() - start, "acquisitions": 256, "images_in": 0, "images_out": 1,
                "bytes_in": 32_000_000, "bytes_out": 70_000})


@pytest.fixture
def chromium(monkeypatch):
    """A headless Debian chromium under selenium; fails (does not skip) when it is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium Manager: no statistics ...
    monkeypatch.setenv("SE_OFFLINE", "true")  # ... and no downloads (both paths are given: it is not run)
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_follows_a_slow_session_live(chromium):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    board = Board()
    accepted = []

    def qa_accept(sid: str) -> dict:
        accepted.append(sid)
        return {"status": "PASS", "deviations": [], "text": "QA PASS", "source": "references", "reference_count": 4}

    server = WebServer(board, "127.0.0.1", 0, token=TOKEN, allow=(), health=lambda: (True, {"sessions": 0}),
                       qa_accept=qa_accept)
    _, port = server.start()
    seen_receiving = threading.Event()
    feeder = threading.Thread(target=slow_session, args=(board, seen_receiving), daemon=True)
    try:
        chromium.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
        wait = WebDriverWait(chromium, WAIT_S, poll_frequency=0.05)
        wait.until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live")
        chromium.execute_script("window.__loadedOnce = 'yes';")  # gone if the page reloads
        feeder.start()

        card = f'article.card[data-id="{SID}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, card)
                   and d.find_element(By.CSS_SELECTOR, card + " .state").text == "receiving")
        seen_receiving.set()
        assert chromium.find_element(By.CSS_SELECTOR, card + " .protocol").text == "gre_field_map"
        station = chromium.find_element(By.CSS_SELECTOR, 'section.station[data-station="AWP-Test"]')
        assert station.find_elements(By.CSS_SELECTOR, card)

        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, card + " .state").text == "done")
        thumb = chromium.find_element(By.CSS_SELECTOR, card + " img.thumb")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb) > 0)
        deviations = [li.text for li in chromium.find_elements(By.CSS_SELECTOR, card + " .deviations li")]
        assert deviations == ["TR should be 5.2 ms but is 6.0 ms"]
        assert "QA FAIL" in chromium.find_element(By.CSS_SELECTOR, card + " .qa-line").text
        facts = chromium.find_element(By.CSS_SELECTOR, card + " .facts").text
        assert "256" in facts and "0 / 1" in facts
        texts = [li.text for li in chromium.find_elements(By.CSS_SELECTOR, card + " .texts li")]
        assert texts == ["WARNING: [module 'simplefft'] 2 readouts outside the encoded matrix were left out"]
        page = chromium.find_element(By.TAG_NAME, "body").text
        assert "Doe" not in page and "PID-12345" not in page
        assert chromium.execute_script("return window.__loadedOnce") == "yes"  # live updates, no reload
        ARTIFACTS.mkdir(exist_ok=True)
        assert chromium.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        accept = chromium.find_element(By.CSS_SELECTOR, card + " button.accept")
        assert accept.is_displayed()  # the page has a token: it offers the accept action
        accept.click()  # POST with the token in the Authorization header
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, card + " .qa-line").text == "QA PASS (4 references)")
        assert accepted == [SID]
        assert chromium.find_element(By.CSS_SELECTOR, card + " .accept-note").text == "accepted as the reference"
        assert not chromium.find_elements(By.CSS_SELECTOR, card + " .deviations li")
        errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        seen_receiving.set()
        feeder.join(10)
        server.stop()
    assert os.path.getsize(ARTIFACTS / "dashboard.png") > 0
