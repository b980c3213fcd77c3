"""Headless Chromium for tests: Debian's `chromium` + `chromium-driver` (`make browser`)
driven through Selenium, with the driver path given so Selenium never tries to download one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


@contextmanager
def headless_chromium(width: int = 1400, height: int = 2000) -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium; the browser quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver_path = shutil.which(DRIVER)
    if binary is None or driver_path is None:
        pytest.fail(
            f"headless Chromium needs {CHROMIUM[0]!r} and {DRIVER!r} on PATH "
            f"(found {binary!r}, {driver_path!r}): run `make browser` (apt-get install "
            "chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
