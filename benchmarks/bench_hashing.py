"""Milliseconds per image, per hashing stage: scanner's fast path against the plain pdqhash/imagehash path.

    python benchmarks/bench_hashing.py [--images 40] [--repeat 3] [--seed 0]    (after pip install -e .)

The corpus is generated in memory: photo-like JPEGs from 256x256 to 1600x1200 (mean about 200 KB).
The plain path is what a pipeline using the libraries directly does: Pillow decode, convert to RGB,
numpy nearest-neighbour to 512x512, pdqhash.compute; imagehash.phash/dhash on the decoded image; and,
end to end, one decode per library. Both paths are checked to give identical hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import time
from collections.abc import Callable

import imagehash
import numpy as np
import pdqhash
from PIL import Image

from scanner.hashing import HASHERS, hash_image
from scanner.hashing.decode import decode_image
from scanner.hashing.hashers import HashInput

WANT = frozenset({"md5", "sha1", "sha256", "pdq", "phash", "dhash"})
SIZES = [(256, 256), (400, 300), (640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200)]


def photo_jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A photo-like JPEG: gradients, shapes and sensor-like noise, quality 84-94."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 6.3)
        channels.append(128 + 90 * np.sin(fx * x / width * 6.3 + phase) * np.cos(fy * y / height * 6.3))
    pixels = np.stack(channels, axis=2)
    for _ in range(12):
        cx, cy, r = (
            rng.uniform(0, width),
            rng.uniform(0, height),
            rng.uniform(0.03, 0.25) * min(width, height),
        )
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 8, pixels.shape)
    buffer = io.BytesIO()
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(buffer, "JPEG", quality=int(rng.integers(84, 95)))
    return buffer.getvalue()


def corpus(count: int, seed: int) -> list[bytes]:
    """`count` JPEGs of sizes drawn from SIZES."""
    rng = np.random.default_rng(seed)
    return [photo_jpeg(*SIZES[int(rng.integers(len(SIZES)))], rng) for _ in range(count)]


# ---------------------------------------------------------------- the plain path


def plain_decode(data: bytes) -> Image.Image:
    """Pillow decode, as every library would do it on its own."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def plain_pdq(image: Image.Image) -> str:
    """pdqhash on 8-bit RGB, numpy nearest-neighbour to 512x512 at floor(dst * size / 512)."""
    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    if max(height, width) > 512:
        pixels = pixels[np.arange(512) * height // 512][:, np.arange(512) * width // 512]
    bits, _quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def plain_pdq_full_resolution(image: Image.Image) -> None:
    """pdqhash on the full-size image, as python-threatexchange does it (not reference-exact above 512)."""
    pdqhash.compute(np.asarray(image.convert("RGB")))


def plain_digests(data: bytes) -> None:
    """hashlib md5, sha1, sha256."""
    for name in ("md5", "sha1", "sha256"):
        hashlib.new(name, data).digest()


def plain_end_to_end(data: bytes) -> tuple[str, str, str]:
    """Each library used on its own: digests, then a decode for PDQ, one for pHash and one for dHash."""
    plain_digests(data)
    return (
        plain_pdq(plain_decode(data)),
        str(imagehash.phash(plain_decode(data))),
        str(imagehash.dhash(plain_decode(data))),
    )


# ---------------------------------------------------------------- timing


def best_ms(action: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs, in milliseconds (the least disturbed by other processes)."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        action()
        runs.append(time.perf_counter_ns() - start)
    return min(runs) / 1e6


def time_fast(data: bytes, repeat: int) -> dict[str, float]:
    """Per-stage times of scanner's path: one decode, shared pixels, one grey image for pHash and dHash."""
    decoded = decode_image(data)

    def fresh() -> HashInput:
        """A new input each run, so the shared pixels are computed again rather than read from cache."""
        return HashInput(data, decoded)

    with_grey = HashInput(data, decoded)
    _ = with_grey.grey
    return {
        "decode": best_ms(lambda: decode_image(data), repeat),
        "pdq": best_ms(lambda: HASHERS["pdq"].compute(fresh()), repeat),
        "grey (shared)": best_ms(lambda: fresh().grey, repeat),
        "phash": best_ms(lambda: HASHERS["phash"].compute(with_grey), repeat),
        "dhash": best_ms(lambda: HASHERS["dhash"].compute(with_grey), repeat),
        "digests": best_ms(
            lambda: [HASHERS[name].compute(with_grey) for name in ("md5", "sha1", "sha256")], repeat
        ),
        "end to end": best_ms(lambda: hash_image(data, WANT), repeat),
    }


def time_plain(data: bytes, repeat: int) -> dict[str, float]:
    """Per-stage times of the plain path on one decoded image, and end to end with a decode per library."""
    image = plain_decode(data)
    return {
        "decode": best_ms(lambda: plain_decode(data), repeat),
        "pdq": best_ms(lambda: plain_pdq(image), repeat),
        "phash": best_ms(lambda: imagehash.phash(image), repeat),
        "dhash": best_ms(lambda: imagehash.dhash(image), repeat),
        "digests": best_ms(lambda: plain_digests(data), repeat),
        "end to end": best_ms(lambda: plain_end_to_end(data), repeat),
        "pdq full-res (pytx style)": best_ms(lambda: plain_pdq_full_resolution(image), repeat),
    }


def check_identical(images: list[bytes]) -> None:
    """Both paths must give the same PDQ, pHash and dHash for every image."""
    for data in images:
        fast = hash_image(data, WANT)
        assert fast.pdq and fast.phash and fast.dhash
        if (fast.pdq.hex(), fast.phash.hex(), fast.dhash.hex()) != plain_end_to_end(data):
            raise SystemExit("fast path and plain path disagree: not bit-exact")


def report(fast: list[dict[str, float]], plain: list[dict[str, float]], images: list[bytes]) -> None:
    """Print mean ms per image for each stage, both paths side by side."""
    sizes = [Image.open(io.BytesIO(data)).size for data in images]
    megapixels = statistics.mean(w * h for w, h in sizes) / 1e6
    print(f"corpus: {len(images)} JPEGs, mean {statistics.mean(map(len, images)) / 1000:.0f} KB, ", end="")
    print(f"mean {megapixels:.2f} MP, {min(sizes)} .. {max(sizes)}; hashes identical on both paths")
    print(f"{'stage (ms per image, mean)':30} {'fast':>8} {'plain':>8}")
    stages = list(dict.fromkeys([*fast[0], *plain[0]]))
    for stage in stages:
        cells = [
            statistics.mean(run[stage] for run in runs) if stage in runs[0] else None
            for runs in (fast, plain)
        ]
        print(
            f"{stage:30}" + "".join(f" {cell:8.2f}" if cell is not None else f" {'-':>8}" for cell in cells)
        )
    fast_total = statistics.mean(run["end to end"] for run in fast)
    print(f"fast path: {1000 / fast_total:.0f} images/s on one core")


def main() -> None:
    """Generate the corpus, check both paths agree, time them, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=40, help="corpus size (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    args = parser.parse_args()
    images = corpus(args.images, args.seed)
    check_identical(images)
    fast = [time_fast(data, args.repeat) for data in images]
    plain = [time_plain(data, args.repeat) for data in images]
    report(fast, plain, images)


if __name__ == "__main__":
    main()
