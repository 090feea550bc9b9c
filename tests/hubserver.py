"""A Hugging Face Hub on 127.0.0.1 for tests: the few endpoints huggingface_hub's HfFileSystem calls to list
and read a dataset repository, over a repository the test builds in memory.

Usage::

    hub = HubRepo("org/name")
    first = hub.commit({"data/train-0.parquet": parquet_bytes})      # "main" now points at it
    with HubServer([hub]) as server:                                  # HF_ENDPOINT = server.endpoint
        ...
        second = hub.commit({"data/train-0.parquet": other_bytes})    # main moved

Endpoints (dataset repositories only, as the Hub answers them, errors with its `X-Error-Code`):
    GET  /api/datasets/<id>/revision/<rev>         {"id", "sha", "siblings"}
    GET  /api/datasets/<id>/tree/<rev>[/<path>]    entries {"type", "oid", "size", "path"} (recursive or not)
    POST /api/datasets/<id>/paths-info/<rev>       the entries of the form's `paths`
    GET  /datasets/<id>/resolve/<rev>/<path>       the file, honouring one `Range: bytes=a-b`
`requests` records (method, path) of every request; `bytes_sent` the file bytes served; `cut_bodies = True`
sends half of each file body and closes the connection; `ignore_ranges = True` answers every range request
with the whole file (200).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit


class HubRepo:
    """A dataset repository: commits (sha -> files) and branches (name -> sha)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, str] = {}

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit holding exactly these files; the branch moves to it. Returns its sha."""
        sha = hashlib.sha1(f"{self.repo_id}:{len(self.commits)}:{sorted(files)}".encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        """A branch name or a full commit sha -> the commit sha, or None."""
        revision = unquote(revision)
        if revision in self.commits:
            return revision
        return self.branches.get(revision)


class HubServer:
    """A threaded HTTP server on 127.0.0.1 answering for the repositories given."""

    def __init__(self, repos: list[HubRepo]) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self.requests: list[tuple[str, str]] = []
        self.cut_bodies = False  # send half of each file body, then close the connection
        self.ignore_ranges = False  # answer a range request with the whole file
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, method: str, path: str, sent: int = 0) -> None:
        with self._lock:
            self.requests.append((method, path))
            self.bytes_sent += sent


def _entries(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    prefix = f"{folder}/" if folder else ""
    entries: dict[str, dict] = {}
    for path, data in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if "/" in rest and not recursive:
            name = prefix + rest.split("/", 1)[0]
            entries[name] = {
                "type": "directory",
                "oid": hashlib.sha1(name.encode()).hexdigest(),
                "path": name,
            }
            continue
        entries[path] = _file_entry(path, data)
    return list(entries.values())


def _file_entry(path: str, data: bytes) -> dict:
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return {"type": "file", "oid": oid, "size": len(data), "path": path}


def _handler_for(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("HEAD")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            split = urlsplit(self.path)
            parts = split.path.strip("/").split("/")
            server.record(method, split.path)
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
                self._api(method, "/".join(parts[2:4]), parts[4], parts[5], "/".join(parts[6:]), split.query)
            elif parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
                self._resolve(method, "/".join(parts[1:3]), parts[4], unquote("/".join(parts[5:])))
            else:
                self._error(404, "RepoNotFound", "Repository not found")

        def _repo_at(self, repo_id: str, revision: str) -> tuple[HubRepo, str] | None:
            repo = server.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            sha = repo.resolve(revision)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
                return None
            return repo, sha

        def _api(self, method: str, repo_id: str, route: str, revision: str, rest: str, query: str) -> None:
            found = self._repo_at(repo_id, revision)
            if found is None:
                return
            repo, sha = found
            files = repo.commits[sha]
            if route == "revision":
                siblings = [{"rfilename": path} for path in sorted(files)]
                self._json({"id": repo_id, "sha": sha, "siblings": siblings, "private": False})
            elif route == "tree":
                recursive = parse_qs(query).get("recursive", ["False"])[0].lower() == "true"
                self._json(_entries(files, unquote(rest), recursive))
            elif route == "paths-info":
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                wanted = form.get("paths", [])
                self._json([_file_entry(p, files[p]) for p in wanted if p in files])
            else:
                self._error(404, "EntryNotFound", "no such route")

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            found = self._repo_at(repo_id, revision)
            if found is None:
                return
            repo, sha = found
            data = repo.commits[sha].get(path)
            if data is None:
                self._error(404, "EntryNotFound", f"{path} does not exist")
                return
            status, body = 200, data
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and not server.ignore_ranges:
                first, _, last = wanted[len("bytes=") :].partition("-")
                start = int(first)
                stop = min(int(last) + 1, len(data)) if last else len(data)
                status, body = 206, data[start:stop]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{_file_entry(path, data)["oid"]}"')
            self.send_header("X-Repo-Commit", sha)
            self.end_headers()
            if method != "HEAD":
                sent = body[: len(body) // 2] if server.cut_bodies else body
                self.wfile.write(sent)
                server.record("BODY", path, len(sent))
                self.close_connection = server.cut_bodies

        def _json(self, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
