"""The peer: an img2dataset sample writer that hashes instead of storing, and matches with faiss.

What a user would build from off-the-shelf packages: one Pillow decode per image, pdqhash on the reference
input (RGB, nearest neighbour to 512x512 when a side is over 512), imagehash pHash, hashlib MD5 and SHA-1,
PDQ matched with faiss IndexBinaryMultiHash (as python-threatexchange does; nflip 1 over 16 chunks finds
every hash within 31 bits), pHash with faiss IndexBinaryFlat, digests with Python sets. Lists are loaded
once per process (img2dataset builds a writer per shard). At close each writer leaves a small JSON of its
counts, matches and CPU seconds per stage beside img2dataset's own stats.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field

import faiss
import imagehash
import numpy as np
import pdqhash
from PIL import Image

PDQ_THRESHOLD, PHASH_THRESHOLD, PDQ_MIN_QUALITY = 31, 8, 50
BATCH = 256
LISTS_ENV = "BENCH_LISTS"  # JSON: {"pdq": path, "md5": path, "extra": path}


def _hex_lines(path: str) -> np.ndarray:
    """A plain one-hash-per-line file as an (n, bytes) uint8 array."""
    with open(path, "rb") as handle:
        text = handle.read().split()
    return np.frombuffer(bytes.fromhex(b"".join(text).decode()), dtype=np.uint8).reshape(len(text), -1)


@dataclass
class Lists:
    """The same lists the scanner loads, indexed for matching."""

    pdq: faiss.IndexBinaryMultiHash
    phash: faiss.IndexBinaryFlat
    md5: set[bytes]
    sha1: set[bytes]

    @classmethod
    def load(cls, paths: dict[str, str]) -> Lists:
        pdq_codes = _hex_lines(paths["pdq"])
        pdq_index = faiss.IndexBinaryMultiHash(256, 16, 16)
        pdq_index.nflip = 1
        pdq_index.add(pdq_codes)
        md5 = {row.tobytes() for row in _hex_lines(paths["md5"])}
        extra: dict[str, list[bytes]] = {"phash": [], "sha1": []}
        with open(paths["extra"], newline="") as handle:
            for record in csv.DictReader(handle):
                extra[record["hash_type"]].append(bytes.fromhex(record["hash"]))
        phash_index = faiss.IndexBinaryFlat(64)
        phash_index.add(np.frombuffer(b"".join(extra["phash"]), dtype=np.uint8).reshape(-1, 8))
        return cls(pdq_index, phash_index, md5, set(extra["sha1"]))


_LISTS: Lists | None = None


def lists() -> Lists:
    """Load the lists once per process."""
    global _LISTS
    if _LISTS is None:
        _LISTS = Lists.load(json.loads(os.environ[LISTS_ENV]))
    return _LISTS


def reference_pdq(image: Image.Image) -> tuple[np.ndarray, int]:
    """pdqhash on the reference input: 8-bit RGB, nearest neighbour to 512x512 at floor(dst * size / 512)."""
    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    if max(height, width) > 512:
        pixels = pixels[np.arange(512) * height // 512][:, np.arange(512) * width // 512]
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return np.packbits(bits.astype(np.uint8)), int(quality)


@dataclass
class _Pending:
    keys: list[str] = field(default_factory=list)
    pdq: list[np.ndarray] = field(default_factory=list)
    pdq_keys: list[str] = field(default_factory=list)
    phash: list[bytes] = field(default_factory=list)


class HashingWriter:
    """img2dataset sample writer (same constructor and methods as its writers) that hashes and matches."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format) -> None:
        self.path = os.path.join(output_folder, f"{shard_id:05d}.hashing")
        self.lists = lists()
        self.cpu = dict.fromkeys(("decode", "pdq", "phash", "digests", "match"), 0.0)
        self.images = self.failed = 0
        self.matches: list[list[str]] = []
        self.pending = _Pending()

    def write(self, img_str, key, caption, meta) -> None:
        if img_str is None:
            return
        self.images += 1
        clock = time.process_time
        start = clock()
        md5, sha1 = hashlib.md5(img_str).digest(), hashlib.sha1(img_str).digest()
        self._digest_matches(key, md5, sha1)
        decoded = clock()
        self.cpu["digests"] += decoded - start
        try:
            image = Image.open(io.BytesIO(img_str))
            image.load()
        except Exception:
            self.failed += 1
            return
        pdq_start = clock()
        self.cpu["decode"] += pdq_start - decoded
        bits, quality = reference_pdq(image)
        phash_start = clock()
        self.cpu["pdq"] += phash_start - pdq_start
        phash = bytes.fromhex(str(imagehash.phash(image)))
        self.cpu["phash"] += clock() - phash_start
        pending = self.pending
        if quality >= PDQ_MIN_QUALITY:
            pending.pdq.append(bits)
            pending.pdq_keys.append(key)
        pending.keys.append(key)
        pending.phash.append(phash)
        if len(pending.keys) >= BATCH:
            self._match()

    def _digest_matches(self, key: str, md5: bytes, sha1: bytes) -> None:
        if md5 in self.lists.md5:
            self.matches.append([key, "md5"])
        if sha1 in self.lists.sha1:
            self.matches.append([key, "sha1"])

    def _match(self) -> None:
        start = time.process_time()
        pending, self.pending = self.pending, _Pending()
        if pending.pdq:
            bounds, _, _ = self.lists.pdq.range_search(np.stack(pending.pdq), PDQ_THRESHOLD + 1)
            self._record(bounds, pending.pdq_keys, "pdq")
        if pending.phash:
            queries = np.frombuffer(b"".join(pending.phash), dtype=np.uint8).reshape(-1, 8)
            bounds, _, _ = self.lists.phash.range_search(queries, PHASH_THRESHOLD + 1)
            self._record(bounds, pending.keys, "phash")
        self.cpu["match"] += time.process_time() - start

    def _record(self, bounds: np.ndarray, keys: list[str], hash_type: str) -> None:
        for i, key in enumerate(keys):
            if bounds[i + 1] > bounds[i]:
                self.matches.append([key, hash_type])

    def close(self) -> None:
        self._match()
        record = {"images": self.images, "failed": self.failed, "matches": self.matches, "cpu": self.cpu}
        with open(self.path, "w") as handle:
            json.dump(record, handle)
