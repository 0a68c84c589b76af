"""Headless Chromium for the operator-page tests (the `browser` fixture in conftest.py).

Debian's chromium + chromium-driver; no skip when they are missing: .ci/run installs them, and a
silently skipped browser test would hide a broken operator page.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[1]
# The README's screenshots are taken by the browser tests. They are written into docs/img only when
# asked (VLALOOP_UPDATE_SCREENSHOTS=1), so an ordinary test run leaves the tree clean.
IMG_DIR = (REPO / "docs" / "img" if os.environ.get("VLALOOP_UPDATE_SCREENSHOTS") == "1"
           else Path(tempfile.gettempdir()) / "vlaloop-screenshots")


@contextmanager
def chromium(profile_dir: Path) -> Iterator:
    """A headless Chromium WebDriver (1400x1050, browser log kept), quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,1050", "--force-device-scale-factor=1",
                 f"--user-data-dir={profile_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to fail on JavaScript errors
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def js_errors(driver) -> list[str]:
    """JavaScript errors logged by the page; refused requests (the 401s before sign-in) are expected."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
