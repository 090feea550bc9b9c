"""A fast loopback image server for benchmarks, run in its own process: path -> canned response, nothing else.

`/img/<n>.<ext>` answers body n (any query string is ignored, so distinct URLs can share a body); any other
path is a 404. HTTP/1.1 keep-alive for clients that keep connections (aiohttp), and a close after the
response for those that ask for it (urllib). A bare asyncio protocol keeps the server's own CPU small next
to the clients'. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def responses(bodies: list[tuple[str, bytes]]) -> dict[bytes, bytes]:
    """Path -> full response bytes (head and body), built once."""
    table = {}
    for n, (ext, body) in enumerate(bodies):
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPES[ext]}\r\nContent-Length: {len(body)}\r\n"
        table[f"/img/{n}.{ext}".encode()] = head.encode() + b"\r\n" + body
    return table


class _Canned(asyncio.Protocol):
    """Answers each GET head it receives from the response table."""

    def __init__(self, table: dict[bytes, bytes]) -> None:
        self._table = table
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        assert self._transport is not None
        target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        self._transport.write(self._table.get(target.split(b"?", 1)[0], NOT_FOUND))
        if b"\nconnection: close" in head.lower():
            self._transport.close()


def serve(bodies: list[tuple[str, bytes]], ready: Connection) -> None:
    """Server process: bind 127.0.0.1 on a free port, report it, serve until terminated."""
    table = responses(bodies)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Canned(table), "127.0.0.1", 0, backlog=4096
        )
        ready.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def start(bodies: list[tuple[str, bytes]]) -> tuple[multiprocessing.Process, int]:
    """Start the server process with (ext, body) pairs; returns the process and its port."""
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(bodies, send), daemon=True, name="loopback-server"
    )
    process.start()
    return process, int(receive.recv())
