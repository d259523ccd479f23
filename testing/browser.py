"""Headless Chromium for the web page tests (Debian's ``chromium`` and ``chromium-driver`` via Selenium).

``missing()`` says why no browser can run here (the tests skip with that reason); ``chromium(tmp)`` starts
one with a fresh profile in ``tmp`` and the flags Chromium needs in a container. Nothing is downloaded:
Selenium is given the driver's path, so its driver manager never runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1400,1000",
)
INSTALL_HINT = (
    "install Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`, as .ci/run does)"
)


def missing() -> str | None:
    """None when a headless Chromium can be driven here, else the reason it cannot."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is pinned in requirements.txt: run make setup)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found; {INSTALL_HINT}"
    return None


def chromium(profile_dir: Path):
    """A headless Chromium driven by Selenium, profile in ``profile_dir`` (fresh each time); ``quit()`` it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={Path(profile_dir).resolve()}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
