"""A page as headless Chromium lays it out at a given viewport (a phone's too: a headless window is never
narrower than 500 px, so the width is set through the DevTools protocol, as a browser's device mode does),
measured by an expression evaluated in it, with a screenshot. Offline: the browser talks only to this
process, over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
from pathlib import Path
from typing import Any

import aiohttp

LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


async def _devtools(flags: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    browser = await asyncio.create_subprocess_exec(
        *flags, "--remote-debugging-port=0", "about:blank", stderr=asyncio.subprocess.PIPE
    )
    assert browser.stderr is not None
    while line := await asyncio.wait_for(browser.stderr.readline(), 60):
        if found := LISTENING.search(line.decode(errors="replace")):
            return browser, found[1]
    raise RuntimeError("chromium never said where its DevTools listen")


class _Page:
    """One page target's DevTools session: commands sent one at a time, events noted as they pass."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.events: list[str] = []

    async def send(self, method: str, **params: Any) -> dict:
        ident = next(self._ids)
        await self._socket.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._socket.receive_json(), 60)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message.get("method", ""))

    async def until(self, event: str) -> None:
        while event not in self.events:
            message = await asyncio.wait_for(self._socket.receive_json(), 60)
            self.events.append(message.get("method", ""))


async def _measure(flags: list[str], url: str, width: int, height: int, expression: str, shot: Path) -> Any:
    browser, address = await _devtools(flags)
    try:
        port = re.search(r":(\d+)/", address)[1]  # type: ignore[index]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json(content_type=None)
            target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                page = _Page(socket)
                metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
                await page.send("Emulation.setDeviceMetricsOverride", **metrics)
                await page.send("Page.enable")
                await page.send("Page.navigate", url=url)
                await page.until("Page.loadEventFired")
                value = await page.send("Runtime.evaluate", expression=expression, returnByValue=True)
                image = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                shot.write_bytes(base64.b64decode(image["data"]))
                return value["result"]["value"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            browser.kill()
        await browser.wait()


def measure(flags: list[str], url: str, width: int, height: int, expression: str, shot: Path) -> Any:
    """The value of a JavaScript expression in the page laid out at width x height CSS pixels (a phone's
    width: mobile layout, its viewport meta honoured), and a screenshot of the whole page into shot."""
    return asyncio.run(_measure(flags, url, width, height, expression, shot))
