"""A hostile HTTP server on 127.0.0.1 for tests and benchmarks: serves given bodies and misbehaves on request.

Usage::

    with LoopbackServer({"/cat.jpg": jpeg_bytes}) as server:
        url = server.url("/cat.jpg")          # "http://127.0.0.1:<port>/cat.jpg"
        ...
        assert server.hits("/cat.jpg") == 1   # requests seen for that path (query ignored)
        assert server.total_hits == 1         # requests seen on any path

`LoopbackServer(files=None, *, host="127.0.0.1", port=0, tls=None)`: `files` maps a path to a body or to
`(body, content_type)`; bodies get a strong ETag and a fixed Last-Modified and answer If-None-Match /
If-Modified-Since with 304. `host` may be any loopback address (127.0.0.2 is reachable on Linux); `port=0`
picks a free port. `tls=(certfile, keyfile)` serves HTTPS, and `server.sni_names` lists the SNI names seen.
The server is threaded (one thread per connection, HTTP/1.1 keep-alive) and thread-safe; `requests()` returns
(method, path, headers) for every request, `peak_in_flight` the most requests it served at once, and
`reset_hits()` clears the counters. Sleeping routes wake up when
the server stops, so a test never waits for them.

Hostile routes (query parameters in brackets, with defaults):
    /status/<code>               that status, empty body
    /redirect/<n>                302 chain: /redirect/<n-1> ... /redirect/0 answers 200 b"end of chain"
    /loop, /loop/back            302 to each other forever
    /redirect-to?url=U[&status=302]   one redirect to U
    /slow[?seconds=30]           sleeps (fractions allowed) before answering 200
    /trickle[?length=1000]       declares length bytes and sends one byte a second
    /huge[?length=N]             N zeros with Content-Length N; without length endless, Connection: close
    /gzipbomb[?size=1073741824]  Content-Encoding: gzip, ~1 KB per MiB on the wire, inflating to size zeros
    /encoded/<gzip|deflate|rawdeflate|bad|br>   GZIP_PAYLOAD encoded that way (bad: garbage labelled gzip)
    /html-as-jpeg                an HTML page served as image/jpeg
    /jpeg-as-octet-stream        a real JPEG served as application/octet-stream
    /truncated                   declares 1000 bytes, sends 100, closes
    /headers-huge[?size=100000]  a response header that long
    /many-headers[?count=500]    that many response headers
    /retry-after?key=K[&status=503&seconds=0&times=1]
                                 status with Retry-After for the first `times` requests of K, then 200
    /reset[?key=K&times=1]       sends a TCP RST instead of an answer (always, or the first `times` for K)
    /reset-body[?key=K&times=1&length=N]  sends half a body, then a TCP RST (the first `times` for K)
    /not-http                    answers with bytes that are not HTTP, then closes
    /echo-headers                200 application/json: the request's method and headers
    /no-head                     405 to HEAD, 200 to GET
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

GZIP_PAYLOAD = b"loopback gzip payload " * 64
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
_MIB = 1 << 20


class LoopbackServer:
    """A threaded HTTP(S) server bound to a loopback address; see the module docstring for routes."""

    def __init__(
        self,
        files: Mapping[str, bytes | tuple[bytes, str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if not host.startswith("127."):
            raise ValueError("LoopbackServer binds loopback addresses only")
        self.files = {path: _with_type(entry) for path, entry in (files or {}).items()}
        self.sni_names: list[str] = []
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._log: list[tuple[str, str, dict[str, str]]] = []
        self._keys: Counter[str] = Counter()
        self._active = 0
        self.peak_in_flight = 0
        self.stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler, self)
        if tls is not None:
            self._wrap_tls(*tls)
        self.host, self.port = self._httpd.server_address[:2]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="loopback", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of path on this server."""
        return self.base_url + path

    def hits(self, path: str) -> int:
        """Requests seen for path (query string ignored)."""
        with self._lock:
            return self._hits[path]

    @property
    def total_hits(self) -> int:
        with self._lock:
            return sum(self._hits.values())

    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path with query, headers) of every request so far."""
        with self._lock:
            return list(self._log)

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._log.clear()
            self._keys.clear()

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def record(self, method: str, target: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._hits[urlsplit(target).path] += 1
            self._log.append((method, target, headers))

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Counts a request as in progress, keeping peak_in_flight up to date."""
        with self._lock:
            self._active += 1
            self.peak_in_flight = max(self.peak_in_flight, self._active)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def take_turn(self, key: str) -> int:
        """How many earlier requests used this key (for routes that misbehave only the first times)."""
        with self._lock:
            turn = self._keys[key]
            self._keys[key] += 1
            return turn

    def _wrap_tls(self, certfile: str, keyfile: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        context.sni_callback = lambda sock, name, ctx: self.sni_names.append(name or "")
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a scan opens many connections at once; a full backlog drops SYNs

    def __init__(self, address: tuple[str, int], handler: type, owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-response is the point of several routes: stay quiet about it."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    @property
    def owner(self) -> LoopbackServer:
        return self.server.owner

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        self.query = {k: v[0] for k, v in parse_qs(split.query).items()}
        self.owner.record(self.command, self.path, dict(self.headers.items()))
        with self.owner.serving():
            if path in self.owner.files:
                return self._file(*self.owner.files[path])
            head, _, rest = path[1:].partition("/")
            route = getattr(self, "route_" + head.replace("-", "_"), None)
            if route is None:
                return self._send(404, b"not found", "text/plain")
            return route(rest)

    # -- plain responses -------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _file(self, body: bytes, content_type: str) -> None:
        etag = f'"{zlib.crc32(body):08x}-{len(body)}"'
        validators = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        if (
            self.headers.get("If-None-Match") == etag
            or self.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            return self._send(304, b"", content_type, validators)
        return self._send(200, body, content_type, validators)

    def _int(self, name: str, default: int) -> int:
        return int(self.query.get(name, default))

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; True if it is."""
        return self.owner.stopping.wait(seconds)

    # -- routes ----------------------------------------------------------------------------------------

    def route_status(self, rest: str) -> None:
        self._send(int(rest), b"", "text/plain")

    def route_redirect(self, rest: str) -> None:
        hops = int(rest)
        if hops <= 0:
            return self._send(200, b"end of chain", "text/plain")
        return self._send(302, b"", "text/plain", {"Location": f"/redirect/{hops - 1}"})

    def route_loop(self, rest: str) -> None:
        self._send(302, b"", "text/plain", {"Location": "/loop" if rest else "/loop/back"})

    def route_redirect_to(self, rest: str) -> None:
        self._send(self._int("status", 302), b"", "text/plain", {"Location": self.query["url"]})

    def route_slow(self, rest: str) -> None:
        if not self._wait(float(self.query.get("seconds", 30))):
            self._send(200, b"slow", "text/plain")

    def route_trickle(self, rest: str) -> None:
        length = self._int("length", 1000)
        self._start(200, "image/jpeg", {"Content-Length": str(length)})
        for _ in range(length):
            self.wfile.write(b"x")
            self.wfile.flush()
            if self._wait(1):
                return

    def route_huge(self, rest: str) -> None:
        length = self.query.get("length")
        if length is None:
            self._start(200, "image/jpeg", {"Connection": "close"})
            self.close_connection = True
            self._stream_zeros(None)
        else:
            self._start(200, "image/jpeg", {"Content-Length": length})
            self._stream_zeros(int(length))

    def route_gzipbomb(self, rest: str) -> None:
        size = max(_MIB, self._int("size", 1 << 30)) // _MIB * _MIB
        first, block, end = _gzip_zero_blocks()
        length = len(first) + len(block) * (size // _MIB - 1) + len(end) + 8
        self._start(200, "image/jpeg", {"Content-Encoding": "gzip", "Content-Length": str(length)})
        if self.command == "HEAD":
            return
        self.wfile.write(first)
        for _ in range(size // _MIB - 1):
            if self.owner.stopping.is_set():
                return
            self.wfile.write(block)
        self.wfile.write(end + struct.pack("<II", _crc32_of_zeros(size), size & 0xFFFFFFFF))

    def route_encoded(self, rest: str) -> None:
        bodies = {
            "gzip": ("gzip", _compress(GZIP_PAYLOAD, 31)),
            "deflate": ("deflate", _compress(GZIP_PAYLOAD, 15)),
            "rawdeflate": ("deflate", _compress(GZIP_PAYLOAD, -15)),
            "bad": ("gzip", b"this is not gzip data at all"),
            "br": ("br", b"\x1b\x00\x00\x00 not really brotli"),
        }
        encoding, body = bodies[rest]
        self._send(200, body, "image/jpeg", {"Content-Encoding": encoding})

    def route_html_as_jpeg(self, rest: str) -> None:
        self._send(200, b"<!doctype html><html><body>Not Found</body></html>", "image/jpeg")

    def route_jpeg_as_octet_stream(self, rest: str) -> None:
        self._send(200, tiny_jpeg(), "application/octet-stream")

    def route_truncated(self, rest: str) -> None:
        self._start(200, "image/jpeg", {"Content-Length": "1000"})
        self.wfile.write(b"\xff" * 100)
        self.wfile.flush()
        self.close_connection = True

    def route_headers_huge(self, rest: str) -> None:
        self._send(200, b"ok", "text/plain", {"X-Huge": "a" * self._int("size", 100_000)})

    def route_many_headers(self, rest: str) -> None:
        self._send(200, b"ok", "text/plain", {f"X-Header-{i}": "v" for i in range(self._int("count", 500))})

    def route_retry_after(self, rest: str) -> None:
        key = "retry-after:" + self.query.get("key", "")
        if self.owner.take_turn(key) < self._int("times", 1):
            retry = {"Retry-After": self.query.get("seconds", "0")}
            return self._send(self._int("status", 503), b"busy", "text/plain", retry)
        return self._send(200, b"served after retry", "text/plain")

    def route_reset(self, rest: str) -> None:
        key = self.query.get("key")
        if key is not None and self.owner.take_turn("reset:" + key) >= self._int("times", 1):
            return self._send(200, b"served after reset", "text/plain")
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def route_reset_body(self, rest: str) -> None:
        key = "reset-body:" + self.query.get("key", "")
        body = b"x" * self._int("length", 100_000)
        if self.owner.take_turn(key) >= self._int("times", 1):
            return self._send(200, body, "application/octet-stream")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def route_not_http(self, rest: str) -> None:
        self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\nthis is not an HTTP response\r\n\r\n")
        self.close_connection = True

    def route_echo_headers(self, rest: str) -> None:
        body = json.dumps({"method": self.command, "headers": dict(self.headers.items())}).encode()
        self._send(200, body, "application/json")

    def route_no_head(self, rest: str) -> None:
        if self.command == "HEAD":
            return self._send(405, b"", "text/plain", {"Allow": "GET"})
        return self._send(200, b"got it", "text/plain")

    # -- streaming helpers -----------------------------------------------------------------------------

    def _start(self, status: int, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def _stream_zeros(self, length: int | None) -> None:
        if self.command == "HEAD":
            return
        chunk = bytes(64 * 1024)
        sent = 0
        while (length is None or sent < length) and not self.owner.stopping.is_set():
            piece = chunk if length is None else chunk[: length - sent]
            self.wfile.write(piece)
            sent += len(piece)


def _with_type(entry: bytes | tuple[bytes, str]) -> tuple[bytes, str]:
    if isinstance(entry, tuple):
        return entry
    return entry, sniff_type(entry)


def sniff_type(body: bytes) -> str:
    """A Content-Type for common image bytes, application/octet-stream otherwise."""
    signatures = {
        b"\xff\xd8\xff": "image/jpeg",
        b"\x89PNG": "image/png",
        b"GIF8": "image/gif",
        b"BM": "image/bmp",
    }
    for magic, content_type in signatures.items():
        if body.startswith(magic):
            return content_type
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@cache
def tiny_jpeg() -> bytes:
    """A small real JPEG (a gradient), made with Pillow in memory."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _compress(data: bytes, wbits: int) -> bytes:
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return encoder.compress(data) + encoder.flush()


@cache
def _gzip_zero_blocks() -> tuple[bytes, bytes, bytes]:
    """Gzip header + first MiB of zeros, one more MiB, and the final empty block (trailer added per size).

    A full flush resets the compressor, so every later MiB compresses to the same bytes and a bomb of any size
    is streamed by repeating one ~1 KB block.
    """
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(_MIB)
    first = encoder.compress(zeros) + encoder.flush(zlib.Z_FULL_FLUSH)
    block = encoder.compress(zeros) + encoder.flush(zlib.Z_FULL_FLUSH)
    end = encoder.flush(zlib.Z_FINISH)[:-8]
    return first, block, end


@cache
def _crc32_of_zeros(size: int) -> int:
    """Only a client that inflated the whole bomb gets here."""
    zeros, crc = bytes(_MIB), 0
    for _ in range(size // _MIB):
        crc = zlib.crc32(zeros, crc)
    return crc


def self_signed(folder, common_name: str, alt_name: str) -> tuple[str, str]:
    """A self-signed EC certificate and key (openssl command) for a TLS test server; skips without openssl."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={common_name}",
         "-addext", f"subjectAltName={alt_name}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)
