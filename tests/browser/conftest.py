"""A real browser for the demo page's tests: Debian's chromium driven by Playwright, never a download.

Playwright 1.64.1 is pinned because its bundled Chromium build (156) is the major Debian ships; it is
launched with `executable_path`, so `playwright install` is never needed (or run). When Debian moves
chromium to a new major, test_chromium.py says which Playwright to pin.
"""
import shutil

import pytest

CHROMIUM = "chromium"  # Debian's package and command (scripts/install_system_deps.sh installs it)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, one for the session; every test opens its own context (cookies, cache, size)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which(CHROMIUM)
    if executable is None:
        pytest.fail("chromium is not installed: scripts/install_system_deps.sh installs Debian's package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()
