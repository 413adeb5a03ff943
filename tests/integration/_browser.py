"""A headless Chromium driven over the Chrome DevTools Protocol, for the dashboard's tests.

Only aiohttp's websocket client is used: one browser-level connection, one page attached
to it as a flat session. Every step is bounded by a timeout; `stop` kills the whole
process group and removes the throwaway profile.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
#: Without the background-networking flags Chromium waits on connections a closed
#: network never answers.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(Exception):
    pass


def chromium_path() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, binary: str | None = None, timeout: float = 20.0) -> None:
        self.binary = binary or chromium_path() or CHROMIUM
        self.timeout = timeout
        #: Exceptions and console messages of the page, for assertions and diagnostics.
        self.console: list[str] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._process: asyncio.subprocess.Process | None = None
        self._profile: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._session: str | None = None

    async def __aenter__(self) -> Browser:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="hpcfed-chromium-")
        try:
            await self._launch()
        except BaseException:
            await self.stop()
            raise

    async def _launch(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            *FLAGS,
            f"--user-data-dir={self._profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() kills all of it
        )
        try:
            url = await asyncio.wait_for(self._devtools_url(), self.timeout)
        except TimeoutError:
            raise BrowserError(f"no DevTools URL from chromium: {self.stderr()}") from None
        # Keep reading stderr, or Chromium blocks once the pipe is full.
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(
            url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)
        )
        self._tasks.append(asyncio.create_task(self._read_messages()))
        target = await self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self._session = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def _devtools_url(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr.append(text)
            if found := _LISTENING.search(text):
                return found.group(1)
        raise BrowserError(f"chromium exited before listening: {self.stderr()}")

    async def _drain_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    def stderr(self) -> str:
        return "\n".join(self._stderr)

    async def stop(self) -> None:
        """Close the connection, kill the process group, remove the profile (idempotent)."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        process, self._process = self._process, None
        if process is not None:
            await _kill_group(process)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the browser was stopped"))
        self._pending.clear()
        if self._profile is not None:
            await asyncio.to_thread(shutil.rmtree, self._profile, True)
            self._profile = None

    # ------------------------------------------------------------ the protocol

    async def _read_messages(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                description = details.get("exception", {}).get("description")
                self.console.append(f"exception: {description or details.get('text')}")
            elif data.get("method") == "Runtime.consoleAPICalled":
                params = data["params"]
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                self.console.append(f"console.{params['type']}: {args}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError(f"DevTools connection closed: {self.stderr()}"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> dict[str, Any]:
        """One DevTools command (to the page unless session=False); its result."""
        if self._ws is None:
            raise BrowserError("the browser is not running")
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        await self._ws.send_json(message)
        try:
            answer = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            self._pending.pop(message["id"], None)
            raise BrowserError(f"{method}: no answer in {self.timeout} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    # ------------------------------------------------------------ what tests use

    async def navigate(self, url: str) -> None:
        """Open `url` and wait until its document has loaded."""
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"navigate to {url}: {answer['errorText']}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while await self.evaluate("document.readyState") != "complete":
            if loop.time() > deadline:
                raise BrowserError(f"{url} did not finish loading in {self.timeout} s")
            await asyncio.sleep(0.1)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"evaluate {expression!r}: {text}")
        return answer["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        """Save the page as a PNG."""
        answer = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(answer["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, data)
        return path


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), wait)
            break
        except TimeoutError:
            continue
    # Renderers and helpers of the group may outlive the main process by a moment.
    for _ in range(50):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)
