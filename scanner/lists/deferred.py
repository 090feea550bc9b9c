"""Image-hash lists loaded in the background, so a scan's first request does not wait for a 10M-entry list.

URL and domain entries screen every row before its request, so the lists that may hold them load first. A
list whose spec and first lines show it holds one image hash type and nothing else (an untyped format: plain
text, PDQ hashio) loads later: the matcher loads and indexes it in a thread while rows are fetched and
hashed; a row's hashes wait for the whole list, never a part of it (lists/matcher.py). The thread runs at
the scan's own priority: a nicer one got so little CPU on a busy machine that the rows waiting for the list
filled the window and the fetching stopped (17 s into a 2-core benchmark scan), while the first request,
in a unit worker of its own, never waited for it.

Its digest is what a resumed run must find unchanged. A resumed run takes it before any request, and the
load refuses a file that no longer has it; a fresh run's load takes it first (one read, in the load's thread)
and refuses the bytes it parses unless they have it too, and the run's checkpoint records it before its
first commit (run/checkpoint.py), which waits for that read only.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future
from pathlib import Path

from scanner.errors import HashListError
from scanner.hashtypes import IMAGE, REGISTRY
from scanner.lists.formats import single_type
from scanner.lists.hashlist import HashList, ListSpec, load_hashlist
from scanner.lists.hashtypes import ListKeys, list_keys
from scanner.regularfile import open_regular

HEAD_BYTES = 1 << 16  # enough for a list's first lines: its format and, for an untyped one, its type
DIGEST_CHUNK = 1 << 22


class DeferredList:
    """A list of one image hash type, its entries loaded by load() (the matcher's build thread) and waited
    for by result(); its digest taken before (a resumed run's) or by the load (None until then)."""

    def __init__(self, spec: ListSpec, hash_type: str, digest: str | None = None) -> None:
        self.name = spec.name
        self.path = spec.path
        self.digest = digest
        self.digest_by_load = digest is None  # set by load(), first thing
        self.hash_type: ListKeys = list_keys(hash_type)
        self._spec = spec
        self._loaded: Future[HashList] = Future()
        self._digested: Future[str] = Future()
        if digest is not None:
            self._digested.set_result(digest)

    def waited_digest(self) -> str:
        """The digest, waiting for the load to take it when it does (a read error is raised here). The load
        takes it first, from one read of the file, and parses after: the first commit of a fresh run, which
        waits for it, waits that read, not the parse and index (many seconds for a large list) while
        the unit workers' pipes fill."""
        return self._digested.result()

    def load(self) -> HashList:
        """Load the list; the file must still be the one whose digest the run recorded, or (a fresh run) the
        one whose digest this load took first."""
        try:
            if not self._digested.done():
                self.digest = _digest(self.path)
                self._digested.set_result(self.digest)
            loaded = load_hashlist(self._spec)
            if self.digest is not None and loaded.digest != self.digest:
                raise HashListError(
                    str(self.path),
                    "the list changed while the scan started; run the same command again "
                    "(with --restart if it says the lists differ)",
                )
            if set(loaded.entries) != {self.hash_type.name}:
                raise HashListError(str(self.path), f"expected {self.hash_type.name} entries only")
        except BaseException as error:  # whoever waits on the list sees the load's own error
            if not self._digested.done():
                self._digested.set_exception(error)
            self._loaded.set_exception(error)
            raise
        self.digest = loaded.digest
        self._loaded.set_result(loaded)
        return loaded

    def result(self) -> HashList:
        return self._loaded.result()

    @property
    def stats(self) -> dict[str, object]:
        return self.result().stats

    @property
    def size(self) -> int:
        return self.result().size

    @property
    def skipped(self) -> dict:
        return self.result().skipped


def deferred(spec: ListSpec, digest_now: bool = True) -> DeferredList | None:
    """The list as a DeferredList when its first lines show one image hash type for every entry; None when
    it may hold URL or domain entries (or its head does not read): it is loaded before any request. Its
    digest is taken now with `digest_now` (a resumed run), else by its load (a fresh run)."""
    image_type = _image_type(spec)
    if image_type is None:
        return None
    if not digest_now:
        return DeferredList(spec, image_type)
    try:
        digest = _digest(spec.path)
    except OSError:
        return None  # loading it now says why, as for any list
    return DeferredList(spec, image_type, digest)


def _image_type(spec: ListSpec) -> str | None:
    try:
        with open_regular(spec.path) as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None
    if len(head) == HEAD_BYTES:
        head = head[: head.rfind(b"\n") + 1]  # whole lines only
    try:
        lines = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    first = next((line.strip() for line in lines if line.strip() and not line.strip().startswith("#")), None)
    found = None if first is None else single_type(first, spec.hash_type)
    known = REGISTRY.get(found) if found is not None else None
    return found if known is not None and known.computed_from == IMAGE else None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while chunk := handle.read(DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
