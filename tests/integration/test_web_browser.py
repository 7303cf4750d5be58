"""The web page in a real headless Chromium (Debian's, driven by Selenium through its
chromedriver) against a running gateway: it loads, shows a trip within a second, and a
Reset pressed on the page is refused while the condition is active, then taken; the trip's
alarm is acknowledged (with a comment) and confirmed on the page through the condition
board, with the board's refusals."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds the helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import require
from web_gateway import INTERLOCK, web_gateway

pytestmark = pytest.mark.peer("chromium")
INSTALL = "apt-get install -y chromium chromium-driver"
_T = TypeVar("_T")


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Gateway.run freezes start-up objects and tunes the collector: undo it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium with its own profile folder; never downloads a browser."""
    chromium = require("chromium", INSTALL)
    driver_bin = require("chromedriver", INSTALL)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


async def poll_page(read: Callable[[], _T], ok: Callable[[_T], bool], what: str,
                    timeout: float = 20.0) -> _T:
    """Read the page (a blocking WebDriver call, off the event loop) until ``ok``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(read)
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"page never showed {what}; last: {value!r}"
        await asyncio.sleep(0.05)


async def test_page_shows_a_trip_within_a_second_and_refuses_an_early_reset(
        tmp_path: Path, browser: Any) -> None:
    """Load, trip shown within 1 s, Reset refused with the reason while hot, taken once cool."""
    from selenium.webdriver.common.by import By

    async with web_gateway(tmp_path) as g:
        await g.feed(150.0)
        await asyncio.to_thread(browser.get, g.url)
        row = f'#interlocks tr[data-name="{INTERLOCK}"]'

        def text(selector: str) -> str:
            return str(browser.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "return e ? e.textContent : '';", selector))

        def state() -> str:
            return text(f"{row} .state")

        def tag_value() -> str:
            return text('#tags tr[data-name="etch1/chamber_temp"] td.num')

        await poll_page(state, lambda s: s == "ok", "the interlock ok after load")
        await poll_page(tag_value, lambda v: v == "150.000", "the live tag value")

        t0 = time.monotonic()
        await g.feed(195.0)
        shown = await poll_page(state, lambda s: s.startswith("tripped"), "the trip")
        took = time.monotonic() - t0
        assert shown == "tripped (high)", shown
        assert took < 1.0, f"the trip took {took:.2f} s to show"

        def press_reset() -> None:
            browser.find_element(By.CSS_SELECTOR, f"{row} button.reset").click()

        def message() -> str:
            return text(f"{row} .msg")

        await asyncio.to_thread(press_reset)
        refused = await poll_page(message, lambda m: "still active" in m, "the refusal")
        assert "etch1/chamber_temp = 195" in refused
        assert g.state() == "tripped"
        assert (await asyncio.to_thread(state)).startswith("tripped")

        alarm = f'#alarms tr[data-name="interlock:{INTERLOCK}"]'
        shown = await poll_page(lambda: text(f"{alarm} .state"), lambda s: "unacked" in s,
                                "the alarm, active and unacknowledged")
        assert shown.startswith("active, latched"), shown

        def press(selector: str, comment: str = "") -> None:
            field = browser.find_element(By.CSS_SELECTOR, "#comment")
            field.clear()
            field.send_keys(comment)
            browser.find_element(By.CSS_SELECTOR, selector).click()

        def alarm_msg() -> str:
            return text(f"{alarm} .amsg")

        await asyncio.to_thread(press, f"{alarm} button.confirm")
        await poll_page(alarm_msg, lambda m: "acknowledge it first" in m,
                        "confirm refused before acknowledge")
        await asyncio.to_thread(press, f"{alarm} button.ack", "checked the chiller")
        await poll_page(lambda: text(f"{alarm} .state"), lambda s: "acked, unconfirmed" in s,
                        "the alarm acknowledged")
        cond = g.gw.conditions.get(f"interlock:{INTERLOCK}")
        assert cond is not None and (cond.user, cond.comment) == \
            ("anonymous", "checked the chiller")
        await asyncio.to_thread(press, f"{alarm} button.ack")
        await poll_page(alarm_msg, lambda m: "already acknowledged" in m,
                        "a second acknowledge refused")

        await g.feed(180.0)
        await asyncio.to_thread(press_reset)
        await poll_page(message, lambda m: m == "reset", "the reset taken")
        await poll_page(state, lambda s: s == "ok", "the interlock ok again")
        assert g.state() == "ok"
        await asyncio.to_thread(press, f"{alarm} button.confirm", "tool restarted")
        await poll_page(lambda: text(alarm), lambda s: s == "", "the alarm gone once confirmed")
        logs = await asyncio.to_thread(browser.get_log, "browser")
        # network: the 409 above is expected; anything else severe is a script error.
        assert not [e for e in logs if e.get("level") == "SEVERE"
                    and e.get("source") != "network"], logs
