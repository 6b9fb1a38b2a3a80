"""Playwright drives Debian's chromium, not the build it bundles: their majors must stay close, and when
Debian's security updates move chromium on, this says what to pin instead of failing obscurely."""
import json
from importlib.metadata import version
from pathlib import Path

import playwright

DRIFT = 2  # majors apart that Playwright's protocol has been seen to tolerate


def major(text: str) -> int:
    return int(text.split(".")[0])


def test_playwright_is_pinned_to_the_chromium_major_debian_ships(browser):
    manifest = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    bundled = next(entry["browserVersion"] for entry in json.loads(manifest.read_text())["browsers"]
                   if entry["name"] == "chromium")
    assert abs(major(browser.version) - major(bundled)) <= DRIFT, (
        f"Debian's chromium is {browser.version}; playwright {version('playwright')} was built for "
        f"{bundled}: "
        f"pin in requirements-dev.txt the Playwright release whose browsers.json names Chromium "
        f"{major(browser.version)}")
