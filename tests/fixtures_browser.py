"""A real headless Chromium (Debian's, installed by `make browser`) driven by selenium.

The driver's path is given explicitly so selenium-manager never tries to download one; the flags
keep Chromium off the network this machine does not have (background networking, component
updates, sync) and let it run as root without a display.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("ORCH_TEST_ARTIFACTS", "test-artifacts"))


def _chromium() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("chromium / chromedriver not installed: run `make browser` "
                    "(Debian packages chromium, chromium-driver)")
    return browser, driver


def new_browser(width: int = 1280, height: int = 900):
    """A fresh headless Chromium session with its own empty profile; caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    profile = tempfile.mkdtemp(prefix="orch-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(30)
    drv._orch_profile = profile  # removed by quit_browser
    return drv


def quit_browser(drv) -> None:
    try:
        drv.quit()
    finally:
        shutil.rmtree(getattr(drv, "_orch_profile", ""), ignore_errors=True)


@pytest.fixture
def browser():
    drv = new_browser()
    try:
        yield drv
    finally:
        quit_browser(drv)


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave files for a person to look at (screenshots): test-artifacts/ by default."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
