"""The status page in a real headless browser: Debian's chromium + chromium-driver via Selenium.

The nodes run in their own ``trio.run`` in a thread; the browser is driven from the test's thread.
Set ``P2PSTORE_SCREENSHOT=docs/status-page.png`` to save the page's screenshot there.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.node.swarm import Swarm, random_file

from .helpers import start_face

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

# Skipped where chromium is absent, except in CI, which must have it (.ci/run installs it).
pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver packages (.ci/run installs them)",
)

MiB = 1 << 20
WAIT = 30.0  # seconds any one page condition may take to appear


class Network:
    """A seeder, a downloader serving HTTP, all in a trio loop in a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ready: queue.Queue[Any] = queue.Queue()
        self.token: trio.lowlevel.TrioToken | None = None
        self.thread = threading.Thread(target=self._thread, daemon=True)
        self.stop_event: trio.Event | None = None
        self.error: BaseException | None = None

    def _thread(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.error = exc
            self.ready.put(exc)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop_event = trio.Event()
        src = self.root / "holiday-video.bin"
        random_file(src, 48 * MiB, seed=11)
        small = self.root / "notes.txt"
        small.write_text("hello from the status page test\n")
        async with trio.open_nursery() as nursery:
            swarm = Swarm(nursery, self.root)
            seeder = await swarm.start(upload_limit=6 * MiB)  # a transfer slow enough to watch
            self.big_id = await seeder.put(src, disperse=False)
            self.node = await swarm.start()
            self.small_id = await self.node.put(small, disperse=False)
            face = await start_face(nursery, self.node)
            self.nursery = nursery
            self.ready.put(face.port)
            await self.stop_event.wait()
            nursery.cancel_scope.cancel()

    def start(self) -> int:
        self.thread.start()
        got = self.ready.get(timeout=60)
        if isinstance(got, BaseException):
            raise got
        port: int = got
        return port

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def start_download(self) -> None:
        async def go() -> None:
            self.nursery.start_soon(self.node.get, self.big_id, self.root / "copy.bin")

        self.call(go)

    def stop(self) -> None:
        if self.token is not None and self.stop_event is not None:
            with _suppress():
                trio.from_thread.run_sync(self.stop_event.set, trio_token=self.token)
        self.thread.join(30)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("CI must install chromium and chromium-driver (.ci/run does)")
    profile = tempfile.mkdtemp(prefix="p2pstore-chromium-")
    options = Options()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the element may not exist yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def test_status_page_in_a_real_browser(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    net = Network(tmp_path)
    try:
        port = net.start()
        base = f"http://127.0.0.1:{port}"
        browser.get(base + "/")
        # The node ID, and a stored file with its gateway link.
        wait_for(
            lambda: browser.find_element(By.ID, "node-id").text == net.node.node_id.hex(),
            "the node ID",
        )
        row = wait_for(
            lambda: browser.find_element(
                By.CSS_SELECTOR, f'#files tr[data-file-id="{net.small_id.hex()}"]'
            ),
            "the stored file",
        )
        link = row.find_element(By.CSS_SELECTOR, "a.file-link")
        assert link.text == "notes.txt"
        assert link.get_attribute("href") == f"{base}/files/{net.small_id.hex()}"

        # A running transfer: its progress bar advances without a reload.
        net.start_download()
        selector = f'#transfers .transfer[data-file-id="{net.big_id.hex()}"]'

        def fraction() -> float:
            return float(
                browser.find_element(By.CSS_SELECTOR, selector).get_attribute("data-fraction")
            )

        first = wait_for(lambda: fraction() > 0 and fraction(), "a transfer in progress")
        second = wait_for(lambda: fraction() > first and fraction(), "the progress to advance")
        assert 0 < first < second <= 1
        bar = browser.find_element(By.CSS_SELECTOR, selector + " .fill")
        assert bar.get_attribute("style").startswith("width:")
        wait_for(
            lambda: "/s" in browser.find_element(By.ID, "rate-now").text, "a throughput figure"
        )
        wait_for(lambda: "/s" in browser.find_element(By.ID, "peer-rates").text, "a peer's rate")
        if os.environ.get("P2PSTORE_SCREENSHOT"):
            wait_for(lambda: fraction() > 0.5, "a transfer past half way")
            browser.save_screenshot(os.environ["P2PSTORE_SCREENSHOT"])

        # Upload through the page: the file picker...
        upload = tmp_path / "from-the-browser.txt"
        upload.write_bytes(b"uploaded through chromium\n" * 1000)
        browser.find_element(By.ID, "disperse").click()  # no peers to disperse to needed
        browser.find_element(By.ID, "file-input").send_keys(str(upload))
        uploaded = wait_for(
            lambda: browser.find_element(By.ID, "uploaded-id").text, "the uploaded file's ID"
        )
        file_id = bytes.fromhex(uploaded)
        files = {f.file_id: f for f in net.node.list_files()}
        assert files[file_id].name == "from-the-browser.txt"
        assert files[file_id].size == upload.stat().st_size
        # ... and drag-and-drop (a drop event carrying a file, as the browser makes on a drop).
        browser.execute_script(
            """
            const dt = new DataTransfer();
            dt.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true,
                                                       cancelable: true}));
            """
        )
        wait_for(
            lambda: any(f.name == "dropped.txt" for f in net.node.list_files()),
            "the dropped file to be stored",
        )
        wait_for(
            lambda: "dropped.txt" in browser.find_element(By.ID, "files").text,
            "the dropped file in the list",
        )
        logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        net.stop()
    assert net.error is None or isinstance(net.error, trio.Cancelled), net.error
