"""The report and the daemon's page, opened in a real browser: Debian's Chromium, driven by Playwright.

Nothing downloads a browser: Playwright launches the system's Chromium (`.ci/run` installs it, and sets
DMN_REQUIRE_TOOLS so that a missing one fails rather than skips; DMN_CHROMIUM names another). Each test saves a screenshot of what it saw under pytest's tmp_path (and into
$DMN_SCREENSHOTS when set, to look at them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import dmn

from dmn.home import Home
from dmn.ops.report import report
from dmn.ops.status import status
from dmn.worlds.synthetic import write_logs

CHROMIUM = os.environ.get("DMN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("DMN_REQUIRE_TOOLS"):
    raise RuntimeError("DMN_REQUIRE_TOOLS is set but no Chromium is installed: apt-get install chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def look(browser, url: str, shot: Path) -> dict:
    """Open `url` at a laptop's size, screenshot the whole page, and read back what a person would see:
    the images (loaded and their size), the tables' text, the page's text."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(url, wait_until="load", timeout=120_000)
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("DMN_SCREENSHOTS"):
            Path(os.environ["DMN_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(os.environ["DMN_SCREENSHOTS"]) / shot.name)
        return page.evaluate("""() => ({
            images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                   height: i.naturalHeight, shown: i.getBoundingClientRect().width})),
            tables: [...document.querySelectorAll('table')].map(t => t.innerText),
            text: document.body.innerText})""")
    finally:
        page.close()


def check_figures(seen: dict, home: Home) -> None:
    """Every image loaded and has a size; each world's table says what `dmn status --json` says."""
    assert seen["images"], "the page shows no plot"
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100 and image["shown"] > 100, image
    state = status(home)
    for world, w in state["worlds"].items():
        table = next(t for t in seen["tables"] if w["bundle"]["version"] in t)
        assert f"{w['bundle']['coverage']:.1%}" in table and f"{w['bundle']['precision']:.1%}" in table, table
        assert f"{w['lake']['decisions']:,} decisions" in table and w["last_night"]["status"] in table, table


def test_the_report_in_a_browser(world, browser, tmp_path):
    home = world[0]
    page = report(home, out=tmp_path / "report")
    seen = look(browser, page.as_uri(), tmp_path / "report.png")
    check_figures(seen, home)
    assert {i["alt"] for i in seen["images"]} >= {"days", "curve", "map", "timings"}


def test_a_report_before_the_first_night_says_so(browser, tmp_path):
    home = Home.resolve(tmp_path / "home")
    seen = look(browser, report(home).as_uri(), tmp_path / "empty-report.png")
    assert "No worlds yet" in seen["text"] and not seen["images"]
    write_logs(home, situations=4, dim=16, episodes=4, steps=10)
    dmn("ingest", home=home)
    seen = look(browser, report(home).as_uri(), tmp_path / "unconsolidated-report.png")
    assert "No bundle yet" in seen["text"], seen["text"]
    assert all(i["complete"] and i["width"] > 100 for i in seen["images"])


def test_the_daemons_page_in_a_browser(world, browser, tmp_path):
    """The daemon's port serves the report at / and the status at /status: one address to look at."""
    shutil.copytree(world[0].root, tmp_path / "home")
    home = Home.resolve(tmp_path / "home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen([sys.executable, "-m", "dmn", "daemon", "--cron", "0 3 * * *", "--metrics-port", str(port),
                               "--home", str(home.root)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10).read())
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, daemon.stderr.read()
                time.sleep(0.2)
        assert served == json.loads(dmn("status", "--json", home=home).stdout)
        seen = look(browser, f"http://127.0.0.1:{port}/", tmp_path / "daemon-page.png")
        check_figures(seen, home)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
