"""Datasets where they live on the Hugging Face Hub: `hf://datasets/ORG/NAME[@REVISION]/PATH`.

An input's revision (a branch such as `main`, a tag, or a commit) is resolved to its commit once, when the
scan plans its inputs, and the input is rewritten to name that commit: every shard of the scan is then read at
that one commit, in every process, whatever the branch does meanwhile. The commit is recorded in the manifest
and in the resume fingerprint (a resume after the branch moved is refused: scanner/run/checkpoint.py).
The files are read through huggingface_hub's fsspec file system (the `hf` extra), HF_ENDPOINT and HF_TOKEN
as huggingface_hub reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from scanner.errors import SourceError
from scanner.sources.storage import first_line

PREFIX = "hf://"
DATASETS = "datasets/"
DEFAULT_REVISION = "main"
RESOLVE_TIMEOUT = 30.0  # seconds for the one revision lookup per input
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a git commit id, SHA-1 or SHA-256


@dataclass(frozen=True, slots=True)
class HubPath:
    """An hf:// dataset path in parts: repository, revision (None: the default branch), path in it."""

    repo_id: str
    revision: str | None
    path: str

    def url(self, revision: str | None) -> str:
        """The path at another revision (None: no revision named)."""
        at = f"@{quote(revision, safe='')}" if revision else ""
        return f"{PREFIX}{DATASETS}{self.repo_id}{at}/{self.path}"


@dataclass(frozen=True, slots=True)
class Pinned:
    """One input as given and the commit its revision named when the scan began."""

    given: str
    repo_id: str
    revision: str
    commit: str
    url: str  # the input with its revision replaced by the commit

    @property
    def root(self) -> str:
        """What every path of the repository at the commit starts with."""
        return HubPath(self.repo_id, None, "").url(self.commit)

    @property
    def key(self) -> str:
        """The input without its revision: what a resume at the same commit must give again."""
        return parse(self.given).url(None)

    def record(self) -> dict[str, str]:
        """The manifest's account of the input."""
        return {"input": self.given, "repo": self.repo_id, "revision": self.revision, "commit": self.commit}


def is_hub(path: str) -> bool:
    """Whether a path names a file on the Hugging Face Hub."""
    return path.startswith(PREFIX)


def parse(url: str) -> HubPath:
    """Split `hf://datasets/ORG/NAME[@REVISION]/PATH`; a revision with '/' is given %-encoded."""
    rest = url[len(PREFIX) :]
    if not rest.startswith(DATASETS):
        raise SourceError(url, "only dataset repositories are read: hf://datasets/ORG/NAME[@REVISION]/PATH")
    parts = rest[len(DATASETS) :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise SourceError(url, "expected hf://datasets/ORG/NAME[@REVISION]/PATH (a file or a glob in it)")
    org, name_at, path = parts
    name, _, revision = name_at.partition("@")
    if not name or (revision == "" and "@" in name_at):
        raise SourceError(url, "expected hf://datasets/ORG/NAME[@REVISION]/PATH")
    return HubPath(f"{org}/{name}", unquote(revision) if revision else None, path)


def pin_inputs(inputs: list[str]) -> tuple[list[str], list[Pinned]]:
    """The inputs with each hf:// one pinned to its commit, and the pins (one lookup per repository and
    revision, so two inputs of one branch are read at the same commit)."""
    resolved: dict[tuple[str, str], str] = {}
    pins: list[Pinned] = []
    pinned_inputs: list[str] = []
    for item in inputs:
        if not is_hub(item):
            pinned_inputs.append(item)
            continue
        hub_path = parse(item)
        revision = hub_path.revision or DEFAULT_REVISION
        key = (hub_path.repo_id, revision)
        if key not in resolved:
            resolved[key] = _commit_of(item, hub_path.repo_id, revision)
        pinned = Pinned(item, hub_path.repo_id, revision, resolved[key], hub_path.url(resolved[key]))
        pins.append(pinned)
        pinned_inputs.append(pinned.url)
    return pinned_inputs, pins


def _commit_of(url: str, repo_id: str, revision: str) -> str:
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError as exc:  # the optional extra
        raise SourceError(url, "install huggingface_hub for hf:// paths (pip install scanner[hf])") from exc
    api = HfApi()
    try:
        info = api.dataset_info(repo_id, revision=revision, timeout=RESOLVE_TIMEOUT)
    except RepositoryNotFoundError as exc:
        raise SourceError(
            url, f"dataset repository {repo_id} not found on {api.endpoint} (a private one needs HF_TOKEN)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise SourceError(url, f"revision {revision!r} not found in dataset {repo_id}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no answer"
        raise SourceError(url, f"the Hub at {api.endpoint} answered {status}") from exc
    except Exception as exc:  # the HTTP client's own errors (httpx, requests) share no base with OSError
        raise SourceError(url, f"cannot reach the Hub at {api.endpoint} ({first_line(exc)})") from exc
    commit = getattr(info, "sha", None)
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):  # it goes into every path read
        raise SourceError(url, f"the Hub at {api.endpoint} gave no commit id for revision {revision!r}")
    return commit
