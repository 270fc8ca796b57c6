"""A real headless Chromium on the monitor page, and what an operator sees there.

:func:`chromium` starts Debian's ``chromium`` through ``chromium-driver`` with Selenium (the
paths are given, so Selenium never looks for or downloads a browser of its own) and always
quits it. :class:`MonitorPage` is the operator: it opens ``/monitor/``, types the token, and
reads the page as it is shown (the call list, the agent, the transcript lines with their
speakers, the handoffs, the tool cards). Selenium blocks, so async code calls these methods
through ``asyncio.to_thread`` to keep the event loop (and the in-process simulator) running.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            return f"{path} not found: install the Debian package {package} (scripts/dev.sh)"
    return None


def _start(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--disable-background-networking",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(15)
    driver.set_script_timeout(10)
    return driver


@contextlib.asynccontextmanager
async def chromium(width: int = 1440, height: int = 1000) -> AsyncIterator[webdriver.Chrome]:
    """A headless Chromium for the duration of the block (quit, also on errors)."""
    driver = await asyncio.to_thread(_start, width, height)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``probe`` every 0.1 s until it returns something truthy (blocking)."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")


class MonitorPage:
    """The monitor page of the control server at ``base_url`` in ``driver``."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    def _js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, element_id: str) -> str:
        """The shown text of one element."""
        return str(self._js("return document.getElementById(arguments[0]).textContent;",
                            element_id)).strip()

    def load(self, timeout_s: float = 10.0) -> None:
        """Load ``/monitor`` (redirected to ``/monitor/``) and wait for the token field."""
        self.driver.get(self.base_url + "/monitor")
        WebDriverWait(self.driver, timeout_s).until(
            expected_conditions.visibility_of_element_located((By.ID, "token")))

    def submit_token(self, token: str) -> None:
        """Type ``token`` into the token field and press "Connect"."""
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.ID, "connect").click()

    def wait_live(self, timeout_s: float = 10.0) -> None:
        """Wait until the page says its event stream is live."""
        wait_for(lambda: self.text("status") == "live", timeout_s, "the event stream")

    def open(self, token: str, timeout_s: float = 10.0) -> None:
        """Load the page, enter ``token``, wait until the stream is live."""
        self.load(timeout_s)
        self.submit_token(token)
        self.wait_live(timeout_s)

    def stored(self) -> dict[str, dict[str, str]]:
        """What the page keeps in ``sessionStorage`` and ``localStorage``."""
        return cast(dict[str, dict[str, str]], self._js(
            "const dump = s => Object.fromEntries([...Array(s.length).keys()]"
            ".map(i => [s.key(i), s.getItem(s.key(i))]));"
            "return {session: dump(sessionStorage), local: dump(localStorage)};"))

    def live_calls(self) -> list[str]:
        """Ids of the calls in the "Live calls" list, in order."""
        return cast(list[str], self._js(
            "return [...document.querySelectorAll('#live-calls li.call')]"
            ".map(li => li.dataset.callId);"))

    def recent_calls(self) -> list[dict[str, str]]:
        """The "Recent calls" list: id, state (the outcome) and the parties, as shown."""
        return cast(list[dict[str, str]], self._js(
            "return [...document.querySelectorAll('#recent-calls li.call')].map(li => ({"
            "id: li.dataset.callId, state: li.querySelector('.state').textContent,"
            "parties: li.querySelector('.parties').textContent}));"))

    def select(self, call_id: str, timeout_s: float = 5.0) -> None:
        """Click a call in either list, and wait until the detail pane shows it."""
        def click() -> bool:
            # The lists are rebuilt as events arrive: an item found may be gone by the click.
            try:
                self.driver.find_element(By.CSS_SELECTOR,
                                         f'li.call[data-call-id="{call_id}"]').click()
            except (NoSuchElementException, StaleElementReferenceException):
                return False
            return self.shown_call() == call_id

        wait_for(click, timeout_s, f"call {call_id} to be listed and selected")

    def shown_call(self) -> str | None:
        """Id of the call the detail pane shows (``None`` when hidden)."""
        return cast(str | None, self._js(
            "const d = document.getElementById('detail');"
            "return d.hidden ? null : d.dataset.callId;"))

    def agent(self) -> str:
        """The current agent, as the detail pane shows it."""
        return self.text("d-agent")

    def transcript(self) -> list[tuple[str, str]]:
        """Shown transcript lines as ``(speaker, text)``; notes have the speaker ``"note"``."""
        rows = cast(list[list[str]], self._js(
            "return [...document.querySelectorAll('#transcript li')].map(li => ["
            "li.classList.contains('note') ? 'note' : li.querySelector('.speaker').textContent,"
            "li.querySelector('.text').textContent]);"))
        return [(speaker, text) for speaker, text in rows]

    def markup_in_transcript(self) -> int:
        """Elements inside transcript texts (text a caller said must never become markup)."""
        return int(self._js(
            "return document.querySelectorAll('#transcript .text *').length;"))

    def levels(self) -> dict[str, float]:
        """The audio meters' values (0..1) and whether each is shown as unavailable (1.0)."""
        return cast(dict[str, float], self._js(
            "const m = id => document.getElementById(id);"
            "return {caller: m('level-caller').value, agent: m('level-agent').value,"
            "unavailable: m('level-agent').classList.contains('unavailable') ? 1 : 0};"))

    def handoffs(self) -> list[str]:
        """The handoff history as ``from → to``."""
        return cast(list[str], self._js(
            "return [...document.querySelectorAll('#handoffs li')].map(li =>"
            " li.querySelector('.from').textContent + ' → ' +"
            " li.querySelector('.to').textContent);"))

    def tool_cards(self) -> list[tuple[str, str, str]]:
        """Tool cards, oldest first: ``(kind, name, badge)``."""
        rows = cast(list[list[str]], self._js(
            "return [...document.querySelectorAll('#tools .card')].reverse().map(c => ["
            "c.querySelector('.kind').textContent, c.querySelector('.name').textContent,"
            "c.querySelector('.badge').textContent]);"))
        return [(kind, name, badge) for kind, name, badge in rows]

    def end_call(self, timeout_s: float = 5.0) -> None:
        """Click "End call" and confirm the browser's dialog."""
        self.driver.find_element(By.ID, "end-call").click()
        alert = WebDriverWait(self.driver, timeout_s).until(expected_conditions.alert_is_present())
        alert.accept()

    def console_errors(self) -> list[str]:
        """Messages of severe entries of the browser console (script errors, CSP refusals)."""
        entries = cast(list[dict[str, Any]],
                       self.driver.get_log("browser"))  # type: ignore[no-untyped-call]
        return [str(entry.get("message")) for entry in entries if entry.get("level") == "SEVERE"]

    def screenshot(self, path: Path) -> Path:
        """A PNG of the window."""
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        return path
