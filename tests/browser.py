"""Open a local HTML file in headless Chromium (selenium) and run scripts in it; skips when unavailable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def run_scripts(page: Path, *scripts: str, window: tuple[int, int] | None = None) -> list:
    """The value of each script (a `return ...` body) evaluated on the page, in order (`window`: the
    browser window's width and height in CSS pixels)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    browser, driver_bin = _chromium(), shutil.which("chromedriver")
    if not browser or not driver_bin:
        pytest.skip("no Chromium/ChromeDriver here (Debian: apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    if window is not None:
        opts.add_argument(f"--window-size={window[0]},{window[1]}")
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        drv.get(Path(page).resolve().as_uri())
        return [drv.execute_script(s) for s in scripts]
    finally:
        drv.quit()


#: Natural width of every image on the page (0 = not decoded).
IMAGE_WIDTHS = "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"

#: [body width, viewport width, page scroll width, [[table id or class, width], ...]] in CSS pixels.
TABLE_WIDTHS = ("return [document.body.clientWidth, document.documentElement.clientWidth, "
                "document.documentElement.scrollWidth, Array.from(document.querySelectorAll('table')).map(t => "
                "[t.id || t.className, Math.ceil(t.getBoundingClientRect().width)])]")
