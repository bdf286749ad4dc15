"""A headless Chromium for the console's browser tests and benchmarks (selenium).

Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``), driven by selenium (the ``dev`` extra): headless, no sandbox,
no GPU, nothing fetched from outside (no component updates, sync or background
networking), a fresh profile in a temporary folder that goes with the browser. Waits are
on events (an element appearing, the document being complete) and bounded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ARGS", "Browser", "BrowserMissing", "find_chromium"]

ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", "--window-size=1400,1000", "--lang=zh-CN")


class BrowserMissing(RuntimeError):
    """Chromium, its driver or selenium is not there, or the browser does not start."""


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) as installed, or None."""
    browser = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"),
                                shutil.which("chromium-browser")) if p and Path(p).exists()), None)
    driver = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver"))
                   if p and Path(p).exists()), None)
    return (browser, driver) if browser and driver else None


class Browser:
    """``with Browser() as b: b.get(url); b.wait("#id")``: one headless Chromium."""

    def __init__(self, *, timeout: float = 15.0) -> None:
        self.timeout = timeout
        found = find_chromium()
        if found is None:
            raise BrowserMissing("Chromium and ChromeDriver are not installed "
                                 "(Debian: apt-get install chromium chromium-driver)")
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise BrowserMissing("selenium is not installed (the dev extra)") from None
        self._profile = tempfile.mkdtemp(prefix="casework-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = found[0]
        for arg in (*ARGS, f"--user-data-dir={self._profile}"):
            options.add_argument(arg)
        options.page_load_strategy = "normal"
        try:
            self.driver: Any = webdriver.Chrome(service=Service(executable_path=found[1]),
                                                options=options)
        except Exception as e:
            shutil.rmtree(self._profile, ignore_errors=True)
            raise BrowserMissing(f"Chromium did not start: {str(e).splitlines()[0][:300]}") from e
        self.driver.set_page_load_timeout(timeout * 2)
        self.driver.set_script_timeout(timeout)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    # -- driving ---------------------------------------------------------------------------
    def get(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, css: str, timeout: float | None = None) -> Any:
        """The first element matching ``css``, once it is there (TimeoutException if not)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout or self.timeout).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def submit(self, form_css: str, wait_for: str) -> Any:
        """Click the form's submit button and wait for the page that follows to show
        ``wait_for`` (a new document: its time origin differs from the old page's)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        origin = self.driver.execute_script("return performance.timeOrigin")
        form = self.find(form_css)
        form.find_element("css selector", "button[type=submit]").click()

        def moved_on(d: Any) -> bool:
            return bool(d.execute_script(
                "return performance.timeOrigin !== arguments[0] && "
                "document.readyState === 'complete'", origin))

        WebDriverWait(self.driver, self.timeout, ignored_exceptions=(WebDriverException,)).until(
            moved_on)
        return self.wait(wait_for)

    def fill(self, css: str, value: str) -> None:
        """Type into an input or text area, or pick an option of a select by its value."""
        el = self.find(css)
        if el.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(el).select_by_value(value)
            return
        if el.get_attribute("type") in ("date", "datetime-local", "time", "month"):
            # typed keys follow the browser's locale (mm/dd/yyyy); the value is ISO
            self.driver.execute_script(
                "arguments[0].value = arguments[1];"
                "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));", el, value)
            return
        el.clear()
        el.send_keys(value)

    def text(self) -> str:
        return str(self.driver.find_element("tag name", "body").text)

    def html(self) -> str:
        return str(self.driver.page_source)

    def timing(self) -> dict[str, float]:
        """The last navigation's timing in ms from its start: ``ttfb`` (the first byte of
        the response) and ``load`` (the load event done: every image and style in)."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, self.timeout).until(lambda d: d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n && n.loadEventEnd > 0;"))
        got = self.driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return n ? {ttfb: n.responseStart - n.startTime, load: n.loadEventEnd - n.startTime,"
            " dcl: n.domContentLoadedEventEnd - n.startTime} : null;")
        return {k: float(v) for k, v in (got or {}).items()}

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path
