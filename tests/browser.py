"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) for the tests that drive pages, via Selenium.

A test module calls :func:`require_browser` before using :func:`start_chrome`: it is skipped where the browser
is missing, except under ``III_REQUIRE_BROWSER`` (set by ``.ci/run``, which installs both), where that fails.
"""

from __future__ import annotations

import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def require_browser() -> None:
    """Skip the calling test module when chromium or chromedriver is missing (fail under III_REQUIRE_BROWSER)."""
    if CHROMIUM and CHROMEDRIVER:
        return
    if os.environ.get("III_REQUIRE_BROWSER"):
        raise RuntimeError("this test needs Debian's chromium and chromium-driver (apt-get install them)")
    pytest.skip("no chromium/chromedriver here (CI installs them)", allow_module_level=True)


def start_chrome() -> webdriver.Chrome:
    """A new headless browser: its own process and profile, so two of them share no cookies or storage."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
