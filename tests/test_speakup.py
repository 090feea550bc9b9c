"""Scheduled runs that speak up: --fail-on's own exit status, rescan's new / gone / back, and --notify's one
JSON event to a loopback receiver (real processes, real HTTP)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from audit_support import images, write_list, write_shard
from conftest import REPO
from loopback import LoopbackServer, self_signed

from scanner.cli.notify import post_event
from scanner.exitcodes import ExitCode

NAMES = ["listed", "plain", "taken"]


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records each POST's JSON and answers the statuses given in turn
    (then 204), each after `delay` seconds."""

    def __init__(
        self, statuses: tuple[int, ...] = (), delay: float = 0.0, tls: tuple[str, str] | None = None
    ):
        self.events: list[dict] = []
        self.attempts = 0
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                time.sleep(delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                if status < 300:
                    receiver.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = (
            f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}/hook?token=secret"
        )

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A shard of three images, two of them listed; the server stays up for the test's runs."""
    tmp = tmp_path_factory.mktemp("speakup")
    bodies = dict(zip(NAMES, images(3, first_seed=300), strict=True))
    files = {f"/{name}.jpg": body for name, body in bodies.items()}
    with LoopbackServer(files) as server:
        urls = [server.url(f"/{name}.jpg") for name in NAMES]
        shard = write_shard(tmp / "shard.parquet", {"url": urls, "key": NAMES})
        md5 = {name: hashlib.md5(body).hexdigest() for name, body in bodies.items()}
        listed = write_list(tmp / "v1.csv", ["hash_type,hash,id,category", f"md5,{md5['listed']},l1,A"])
        with listed.open("a") as handle:
            handle.write(f"md5,{md5['taken']},t1,B\n")
        more = write_list(tmp / "v2.csv", [*listed.read_text().split("\n")[:-1], f"md5,{md5['plain']},p1,C"])
        yield {"tmp": tmp, "server": server, "shard": shard, "list": f"v1={listed}", "v2": f"v2={more}"}


def scan(scanner_cli, chain: dict, out: str, *flags: str) -> subprocess.CompletedProcess:
    tmp = chain["tmp"]
    command = ["scan", str(chain["shard"]), "--hashlist", chain["list"], "--out", str(tmp / out)]
    return scanner_cli(*command, "--allow-private-networks", "--workers", "1", "--quiet", *flags)


def rescan(scanner_cli, chain: dict, previous: str, out: str, *flags: str) -> subprocess.CompletedProcess:
    tmp = chain["tmp"]
    command = ["rescan", str(tmp / previous), "--out", str(tmp / out), "--allow-private-networks"]
    return scanner_cli(*command, "--workers", "1", "--quiet", *flags)


def changes(out: Path) -> list[tuple[str, str]]:
    lines = (out / "changes.jsonl").read_text().split("\n")[:-1]
    return [(record["key"], record["change"]) for record in map(json.loads, lines)]


def test_fail_on_new_and_back_through_a_chain_of_runs(chain, scanner_cli) -> None:
    tmp, server = chain["tmp"], chain["server"]
    with Receiver() as receiver:
        first = scan(
            scanner_cli, chain, "first", "--keep-hashes", "--fail-on", "new-match", "--notify", receiver.url
        )
        assert first.returncode == ExitCode.FOUND == 3, first.stderr  # no run before it: every match is new
        assert "--fail-on new-match: found (exit status 3); new matched rows: 2" in first.stdout
        (event,) = receiver.events
    assert event["command"] == "scan" and event["found"] is True and event["rows"] == 3
    assert event["new_matches"] == {"rows": 2, "by_list": {"v1": 2}, "by_category": {"A": 1, "B": 1}}
    assert event["report"] == str((tmp / "first" / "report.html").resolve())
    assert "127.0.0.1" not in json.dumps(event)  # no matched URL without --notify-urls

    taken = server.files.pop("/taken.jpg")
    gone = rescan(scanner_cli, chain, "first", "second", "--fail-on", "new-match")
    assert gone.returncode == ExitCode.OK, gone.stderr
    assert changes(tmp / "second") == [("taken", "newly_dead"), ("taken", "match_gone")]

    server.files["/taken.jpg"] = taken
    with Receiver() as receiver:
        back = rescan(
            scanner_cli, chain, "second", "third", "--fail-on", "new-match", "--notify", receiver.url
        )
        assert back.returncode == ExitCode.FOUND, back.stderr
        (event,) = receiver.events
    assert changes(tmp / "third") == [("taken", "newly_live"), ("taken", "match_back")]
    assert event["new_matches"]["rows"] == 1 and event["changes"]["matches_back"] == 1
    summary = json.loads((tmp / "third" / "summary.json").read_text())
    assert (summary["changes"]["new_matches"], summary["changes"]["matches_back"]) == (0, 1)

    again = rescan(scanner_cli, chain, "third", "fourth", "--fail-on", "match")
    assert again.returncode == ExitCode.FOUND, again.stderr  # matches, none of them new
    assert rescan(scanner_cli, chain, "third", "fifth", "--fail-on", "new-match").returncode == ExitCode.OK
    assert rescan(scanner_cli, chain, "third", "sixth", "--fail-on", "changed").returncode == ExitCode.OK
    plain = server.files["/plain.jpg"]
    server.files["/plain.jpg"] = (images(1, first_seed=999)[0], "image/jpeg")
    changed = rescan(scanner_cli, chain, "third", "seventh", "--fail-on", "changed")
    server.files["/plain.jpg"] = plain
    assert changed.returncode == ExitCode.FOUND, changed.stderr
    assert ("plain", "content_changed") in changes(tmp / "seventh")


def test_scan_with_previous_and_rematch_count_only_what_is_new(chain, scanner_cli) -> None:
    tmp = chain["tmp"]
    base = scan(scanner_cli, chain, "base", "--keep-hashes")
    assert base.returncode == ExitCode.OK, base.stderr  # --fail-on none: matches are not errors
    with Receiver() as receiver:
        flags = ("--previous", str(tmp / "base"), "--fail-on", "new-match", "--notify", receiver.url)
        same = scan(scanner_cli, chain, "same", *flags, "--notify-urls")
        assert same.returncode == ExitCode.OK, same.stderr
        assert receiver.events[0]["new_matches"] == {"rows": 0, "by_list": {}, "by_category": {}, "urls": []}
    command = ["rematch", str(tmp / "base"), "--hashlist", chain["v2"], "--out", str(tmp / "re"), "--quiet"]
    with Receiver() as receiver:
        done = scanner_cli(*command, "--fail-on", "new-match", "--notify", receiver.url, "--notify-urls")
        assert done.returncode == ExitCode.FOUND, done.stderr
        news = receiver.events[0]["new_matches"]
    assert news["rows"] == 1 and news["by_category"] == {"C": 1} and news["urls"][0].endswith("/plain.jpg")
    changed = scan(scanner_cli, chain, "changed", "--fail-on", "changed")
    assert changed.returncode == ExitCode.OK, changed.stderr  # no row's bytes differ from a claimed digest


def test_a_failed_notice_is_a_warning_and_leaves_the_exit_status(chain, scanner_cli) -> None:
    with Receiver(statuses=(500, 503, 500)) as receiver:
        done = scan(scanner_cli, chain, "warned", "--fail-on", "match", "--notify", receiver.url)
        assert receiver.attempts == 2  # one retry, never more
    assert done.returncode == ExitCode.FOUND
    assert "scanner: warning: --notify to http://127.0.0.1:" in done.stderr
    assert "HTTP 503 (attempt 2 of at most 2)" in done.stderr and "secret" not in done.stderr
    assert "the run itself finished" in done.stderr


def test_notify_retries_once_on_a_timeout_and_not_on_a_refusal() -> None:
    event = {"event": "test"}
    with Receiver(delay=1.0) as slow:
        started = time.monotonic()
        why = post_event(slow.url, event, timeout=0.3)
        assert why is not None and "Timeout" in why and slow.attempts == 2
        assert time.monotonic() - started < 5
    with Receiver(statuses=(404,)) as refusing:
        assert post_event(refusing.url, event, timeout=5) == "HTTP 404 (attempt 1 of at most 2)"
        assert refusing.attempts == 1
    with Receiver(statuses=(503,)) as flaky:
        assert post_event(flaky.url, event, timeout=5) is None
        assert flaky.attempts == 2 and flaky.events == [event]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    return self_signed(tmp_path_factory.mktemp("tls"), "receiver", "IP:127.0.0.1")


def test_notify_verifies_tls_even_on_loopback(certificate) -> None:
    with Receiver(tls=certificate) as receiver:
        why = post_event(receiver.url, {"event": "test"}, timeout=5)
        assert why is not None and "CERTIFICATE_VERIFY_FAILED" in why and receiver.events == []
        assert post_event(receiver.url, {"event": "test"}, timeout=5, ca_file=certificate[0]) is None
        assert receiver.events == [{"event": "test"}]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/x", "http:///nohost", "http://[::1/x"])
def test_a_notify_url_that_is_not_http_is_refused_before_the_run(chain, scanner_cli, url) -> None:
    done = scan(scanner_cli, chain, "refused", "--notify", url)
    assert done.returncode == ExitCode.ERROR and "--notify must be an http://" in done.stderr
    assert not (chain["tmp"] / "refused").exists()


def test_the_readme_exit_codes_table_is_the_enum() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("| exit code | name |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^ *\| (\d+) \| `(\w+)` \|", table, re.M)
    assert [(int(code), name) for code, name in rows] == [(int(c), c.name) for c in ExitCode]


def test_a_notify_ca_that_is_not_pem_is_refused_before_the_run(chain, scanner_cli) -> None:
    bad = chain["tmp"] / "bad.pem"
    bad.write_text("not a certificate\n")
    done = scan(scanner_cli, chain, "bad-ca", "--notify", "https://127.0.0.1:9/", "--notify-ca", str(bad))
    assert (
        done.returncode == ExitCode.ERROR and "--notify-ca" in done.stderr and "Traceback" not in done.stderr
    )
    assert not (chain["tmp"] / "bad-ca").exists()


def test_fail_on_match_counts_held_rows() -> None:
    from scanner.cli.speakup import News, found_what
    from scanner.outcomes import FailOn, Outcome

    held_only = {"matches": {"rows": 0}, "outcomes": {Outcome.HELD: 5}}
    assert found_what(FailOn.MATCH, held_only, News())
    assert not found_what(FailOn.MATCH, {"matches": {"rows": 0}, "outcomes": {Outcome.SUPPRESSED: 2}}, News())
