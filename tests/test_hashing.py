"""The hashing stage on images generated in memory: formats, modes, limits, failures, and the fast path
checked bit for bit against the plain reference path (decode with Pillow, hash with pdqhash / imagehash)."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import warnings
import zlib
from collections.abc import Callable

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

from scanner.errors import InputError, ScannerError
from scanner.hashing import (
    HASH_TYPES,
    HASHERS,
    DecodeError,
    DecodeLimits,
    hash_file_record,
    hash_image,
    sniff_format,
)
from scanner.hashing.pdq import nearest_512, pdq_pixels

ALL = frozenset({"md5", "sha1", "sha256", "pdq", "phash", "dhash"})
DIGESTS = frozenset({"md5", "sha1", "sha256"})
HTML = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>"


# ---------------------------------------------------------------- generated images


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, a few shapes and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
        channels.append(128 + 90 * np.sin(fx * x / width * 6.3 + phase) * np.cos(fy * y / height * 6.3))
    pixels = np.stack(channels, axis=2)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * min(width, height)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode an image in memory."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour); rows=None leaves the pixel data out."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(rows) if rows is not None else zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def png_16bit_rgb(samples: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of an (h, w, 3) uint16 array."""
    height, width, _ = samples.shape
    rows = b"".join(b"\x00" + samples[row].astype(">u2").tobytes() for row in range(height))
    return raw_png(width, height, 16, 2, rows)


def grey16(width: int, height: int) -> np.ndarray:
    """16-bit grey samples whose low and high bytes carry different pictures."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    high = (x * 255 // width).astype(np.uint16)
    low = ((np.sin(y / 9.0) + 1) * 100 + rng.integers(0, 50, (height, width))).astype(np.uint16)
    return (high << 8) | low


def animated_gif(frames: int) -> bytes:
    """An animated GIF whose frames differ."""
    images = [photo(160, 120, seed=i).convert("P") for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=50, loop=0)


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG, as print workflows leave on the web."""
    return encode(photo(300, 200, seed=3).convert("CMYK"), "JPEG", quality=90)


def palette_png(transparent: bool) -> bytes:
    """A palette PNG, optionally with a transparent index."""
    image = photo(240, 180, seed=4).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def with_alpha(mode: str) -> Image.Image:
    """An RGBA or LA image with a varying alpha channel."""
    image = photo(200, 150, seed=5).convert(mode.removesuffix("A"))
    alpha = Image.linear_gradient("L").resize(image.size)
    return Image.merge(mode, (*image.split(), alpha))


CORPUS: dict[str, Callable[[], bytes]] = {
    "jpeg_large": lambda: encode(photo(1600, 1200), "JPEG", quality=85),
    "jpeg_small": lambda: encode(photo(300, 200, seed=1), "JPEG", quality=85),
    "jpeg_tall_odd": lambda: encode(photo(517, 1301, seed=2), "JPEG", quality=80),
    "jpeg_grey": lambda: encode(photo(900, 700, seed=6).convert("L"), "JPEG"),
    "jpeg_cmyk": cmyk_jpeg,
    "jpeg_progressive": lambda: encode(photo(700, 600, seed=8), "JPEG", progressive=True),
    "png_rgb_large": lambda: encode(photo(800, 600, seed=9), "PNG"),
    "png_palette": lambda: palette_png(transparent=False),
    "png_palette_transparent": lambda: palette_png(transparent=True),
    "png_rgba": lambda: encode(with_alpha("RGBA"), "PNG"),
    "png_la": lambda: encode(with_alpha("LA"), "PNG"),
    "png_1bit": lambda: encode(photo(300, 300, seed=10).convert("1"), "PNG"),
    "png_16bit_grey_large": lambda: encode(Image.fromarray(grey16(700, 520)), "PNG"),
    "gif_animated": lambda: animated_gif(3),
    "webp_lossy": lambda: encode(photo(640, 480, seed=11), "WEBP", quality=80),
    "webp_lossless_rgba": lambda: encode(with_alpha("RGBA"), "WEBP", lossless=True),
    "bmp": lambda: encode(photo(260, 190, seed=12), "BMP"),
    "tiff": lambda: encode(photo(600, 530, seed=13), "TIFF"),
    "ico": lambda: encode(photo(64, 64, seed=14), "ICO"),
}
FORMATS = {
    "jpeg_large": "jpeg",
    "jpeg_small": "jpeg",
    "jpeg_tall_odd": "jpeg",
    "jpeg_grey": "jpeg",
    "jpeg_cmyk": "jpeg",
    "jpeg_progressive": "jpeg",
    "png_rgb_large": "png",
    "png_palette": "png",
    "png_palette_transparent": "png",
    "png_rgba": "png",
    "png_la": "png",
    "png_1bit": "png",
    "png_16bit_grey_large": "png",
    "gif_animated": "gif",
    "webp_lossy": "webp",
    "webp_lossless_rgba": "webp",
    "bmp": "bmp",
    "tiff": "tiff",
    "ico": "ico",
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    """Every generated image, encoded once per test module."""
    return {name: make() for name, make in CORPUS.items()}


# ---------------------------------------------------------------- the plain reference path


def reference_pdq(data: bytes) -> tuple[str, int]:
    """PDQ the plain way: Pillow decode, 8-bit RGB (16-bit grey keeps the low byte, as the C++ reference's
    CImg cast does), numpy nearest-neighbour to 512x512 at floor(dst * size / 512), pdqhash.compute."""
    image = Image.open(io.BytesIO(data))
    if image.mode.startswith("I"):
        grey = (np.asarray(image).astype(np.int64) & 0xFF).astype(np.uint8)
        pixels = np.stack([grey, grey, grey], axis=2)
    else:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    if max(height, width) > 512:
        rows, cols = np.arange(512) * height // 512, np.arange(512) * width // 512
        pixels = pixels[rows][:, cols]
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return format(int("".join(str(bit) for bit in bits), 2), "064x"), quality


def reference_imagehash(data: bytes, function: Callable[..., imagehash.ImageHash]) -> str:
    """pHash or dHash exactly as imagehash computes it on the full decoded image."""
    return str(function(Image.open(io.BytesIO(data)), hash_size=8))


def hamming(a: bytes, b: bytes) -> int:
    """Bits that differ between two equal-length hashes."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


# ---------------------------------------------------------------- format sniffing


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_sniff_format_names_each_generated_format(corpus: dict[str, bytes], name: str) -> None:
    """Magic bytes name the format; the encoder that wrote it agrees."""
    assert sniff_format(corpus[name]) == FORMATS[name]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("AVIF", "avif"), ("JPEG2000", "jpeg2000")],
)
def test_sniff_format_names_modern_formats(fmt: str, expected: str) -> None:
    """AVIF (ISO-BMFF brands) and JPEG 2000 are recognised and decode."""
    data = encode(photo(64, 48), fmt)
    assert sniff_format(data) == expected
    hashes = hash_image(data, ALL)
    assert (hashes.format, hashes.width, hashes.height) == (expected, 64, 48)


@pytest.mark.parametrize(
    "body",
    [
        HTML,
        b"",
        b"\x00" * 64,
        b'{"error": "not found"}',
        b"BMW 320i for sale, 2009, low mileage",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"\xff\xd8",
    ],
    ids=["html", "empty", "zeros", "json", "bm_text", "riff_wave", "two_jpeg_bytes"],
)
def test_non_images_are_not_an_image_even_for_digests(body: bytes) -> None:
    """An error page served as image/jpeg is `not_an_image`, whatever hashes were wanted."""
    assert sniff_format(body) is None
    for want in (DIGESTS, ALL):
        with pytest.raises(DecodeError) as caught:
            hash_image(body, want)
        assert caught.value.reason == "not_an_image"
        assert isinstance(caught.value, ScannerError)


@pytest.mark.parametrize(
    "body", [HTML, raw_png(30000, 30000, 8, 2), b"\x00\x00\x00\x20ftypisom" + b"\x00" * 40]
)
def test_failures_carry_the_wanted_digests(body: bytes) -> None:
    """A page, a bomb or a video cannot be hashed perceptually, but its digests still reach exact matching."""
    with pytest.raises(DecodeError) as caught:
        hash_image(body, ALL)
    assert caught.value.digests == {name: hashlib.new(name, body).digest() for name in DIGESTS}
    with pytest.raises(DecodeError) as caught:
        hash_image(body, frozenset({"pdq"}))
    assert caught.value.digests == {}


def test_decode_error_survives_pickling() -> None:
    """Hashing runs in worker processes: reason, message and digests must cross the pipe intact."""
    with pytest.raises(DecodeError) as caught:
        hash_image(b"\xff\xd8\xff" + HTML, ALL)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.reason, str(copy), copy.digests) == (
        "corrupt_image",
        str(caught.value),
        caught.value.digests,
    )


def test_heif_is_recognised_but_unsupported() -> None:
    """HEIF/HEIC is an image this Pillow cannot decode: `unsupported_format`, not `not_an_image`."""
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    assert sniff_format(heic) == "heif"
    with pytest.raises(DecodeError) as caught:
        hash_image(heic, DIGESTS)
    assert caught.value.reason == "unsupported_format"


# ---------------------------------------------------------------- digests and header


def test_digests_are_of_the_exact_bytes_and_skip_decoding(corpus: dict[str, bytes]) -> None:
    """Digests equal hashlib's; perceptual fields stay None; the header still gives size and format."""
    data = corpus["jpeg_large"]
    hashes = hash_image(data, DIGESTS)
    assert hashes.md5 == hashlib.md5(data).digest()
    assert hashes.sha1 == hashlib.sha1(data).digest()
    assert hashes.sha256 == hashlib.sha256(data).digest()
    assert (hashes.pdq, hashes.pdq_quality, hashes.phash, hashes.dhash) == (None, None, None, None)
    assert (hashes.width, hashes.height, hashes.format) == (1600, 1200, "jpeg")


def test_digest_only_reads_the_header_only(corpus: dict[str, bytes]) -> None:
    """A truncated JPEG still yields digests and size when only digests are wanted (no pixels decoded),
    and fails as truncated once a perceptual hash needs its pixels."""
    data = corpus["jpeg_large"][: len(corpus["jpeg_large"]) // 2]
    hashes = hash_image(data, frozenset({"md5"}))
    assert (hashes.md5, hashes.width, hashes.height) == (hashlib.md5(data).digest(), 1600, 1200)
    with pytest.raises(DecodeError) as caught:
        hash_image(data, frozenset({"md5", "dhash"}))
    assert caught.value.reason == "truncated_image"


def test_unknown_hash_type_is_a_programming_error(corpus: dict[str, bytes]) -> None:
    """A typo in `want` fails loudly instead of silently hashing less."""
    with pytest.raises(ValueError, match="md6"):
        hash_image(corpus["jpeg_small"], frozenset({"md5", "md6"}))


def test_registry_declares_every_type_and_its_length(corpus: dict[str, bytes]) -> None:
    """HASH_TYPES is the documented set, and every hasher's output has its declared byte length."""
    assert frozenset({"md5", "sha1", "sha256", "pdq", "pdq_dihedral", "phash", "dhash"}) == HASH_TYPES
    hashes = hash_image(corpus["jpeg_small"], HASH_TYPES)
    for name, hasher in HASHERS.items():
        value = getattr(hashes, name)
        values = value if name == "pdq_dihedral" else (value,)
        assert all(len(item) == hasher.size for item in values), name
    assert hashes.pdq_dihedral is not None and len(hashes.pdq_dihedral) == 8


# ---------------------------------------------------------------- fast path == plain reference path


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_format_and_mode_matches_the_reference_path(corpus: dict[str, bytes], name: str) -> None:
    """One decode, shared pixels, Pillow's nearest-neighbour and the grey view give exactly the plain
    path's PDQ (hash and quality), and exactly imagehash's pHash/dHash of the full image."""
    data = corpus[name]
    hashes = hash_image(data, ALL)
    assert hashes.pdq is not None and hashes.phash is not None and hashes.dhash is not None
    assert (hashes.pdq.hex(), hashes.pdq_quality) == reference_pdq(data)
    assert hashes.phash.hex() == reference_imagehash(data, imagehash.phash)
    assert hashes.dhash.hex() == reference_imagehash(data, imagehash.dhash)
    opened = Image.open(io.BytesIO(data))
    assert (hashes.width, hashes.height, hashes.format) == (*opened.size, FORMATS[name])


def test_pdq_dihedral_original_is_the_pdq_hash(corpus: dict[str, bytes]) -> None:
    """The first dihedral hash is the plain PDQ hash, with the same quality."""
    hashes = hash_image(corpus["jpeg_tall_odd"], frozenset({"pdq", "pdq_dihedral"}))
    assert hashes.pdq_dihedral is not None
    assert hashes.pdq_dihedral[0] == hashes.pdq


@pytest.mark.parametrize("name", ["jpeg_grey", "png_la", "png_1bit", "png_16bit_grey_large"])
def test_grey_view_is_bit_exact(corpus: dict[str, bytes], name: str) -> None:
    """The zero-copy 3-channel view of a grey image hashes exactly like three real copies of the channel."""
    view = pdq_pixels(Image.open(io.BytesIO(corpus[name])))
    assert view.strides[2] == 0
    copy = np.ascontiguousarray(view)
    view_bits, view_quality = pdqhash.compute(view)
    copy_bits, copy_quality = pdqhash.compute(copy)
    assert np.array_equal(view_bits, copy_bits)
    assert view_quality == copy_quality


@pytest.mark.parametrize(
    "size",
    [
        (513, 513),
        (514, 700),
        (1023, 1025),
        (1600, 1004),
        (1004, 1600),
        (4032, 3024),
        (5000, 600),
        (20000, 513),
    ],
)
def test_nearest_512_takes_floor_of_dst_times_size(size: tuple[int, int]) -> None:
    """Pillow's affine nearest neighbour selects exactly source pixel floor(dst * size / 512) on both axes."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    coordinates = Image.fromarray((y * width + x).astype(np.int32))
    picked = np.asarray(nearest_512(coordinates)).astype(np.int64)
    dst = np.arange(512)
    expected = (dst * height // 512)[:, None] * width + (dst * width // 512)[None, :]
    assert np.array_equal(picked, expected)


def test_nearest_512_is_exact_for_every_width_up_to_2600() -> None:
    """The same on every width from 513 to 2600 (one-pixel-high rows keep this cheap)."""
    for width in range(513, 2601):
        row = Image.fromarray(np.arange(width, dtype=np.int32)[None, :])
        picked = np.asarray(nearest_512(row))[0]
        assert np.array_equal(picked, np.arange(512) * width // 512), width


# ---------------------------------------------------------------- modes the reference defines oddly


def test_16bit_colour_png_keeps_low_bytes_for_pdq_and_pillow_bytes_for_imagehash() -> None:
    """For 16-bit RGB the C++ reference (CImg) keeps each sample's low byte; imagehash sees Pillow's high
    byte. Each hash follows its own reference."""
    rng = np.random.default_rng(21)
    high = np.asarray(photo(96, 80, seed=21)).astype(np.uint16) << 8
    samples = high | rng.integers(0, 256, (80, 96, 3), dtype=np.uint16)
    data = png_16bit_rgb(samples)
    hashes = hash_image(data, ALL)
    assert hashes.pdq is not None and hashes.phash is not None
    low_bits, low_quality = pdqhash.compute(np.ascontiguousarray((samples & 0xFF).astype(np.uint8)))
    assert hashes.pdq == np.packbits(low_bits.astype(np.uint8)).tobytes()
    assert hashes.pdq_quality == low_quality
    assert hashes.phash.hex() == reference_imagehash(data, imagehash.phash)
    high_bits, _ = pdqhash.compute(np.ascontiguousarray((samples >> 8).astype(np.uint8)))
    assert hashes.pdq != np.packbits(high_bits.astype(np.uint8)).tobytes()


def test_float_tiff_is_clipped_to_8_bits_for_pdq() -> None:
    """Float samples (which the reference has no rule for) are clipped to 0..255 and truncated."""
    samples = np.asarray(photo(120, 90, seed=22).convert("L")).astype(np.float32) * 1.4 - 30.5
    hashes = hash_image(encode(Image.fromarray(samples), "TIFF"), frozenset({"pdq"}))
    grey = np.clip(samples, 0, 255).astype(np.uint8)
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.stack([grey, grey, grey], axis=2)))
    assert (hashes.pdq, hashes.pdq_quality) == (np.packbits(bits.astype(np.uint8)).tobytes(), quality)


def test_animated_gif_hashes_its_first_frame(corpus: dict[str, bytes]) -> None:
    """An animation is hashed by its first frame: the same hashes as a still GIF of that frame."""
    first = Image.open(io.BytesIO(corpus["gif_animated"]))
    still = encode(first.copy(), "GIF")
    animated = hash_image(corpus["gif_animated"], ALL - DIGESTS)
    assert animated == hash_image(still, ALL - DIGESTS)


def test_exif_orientation_is_ignored() -> None:
    """Like the reference, hashes are of the stored pixels, not the EXIF-rotated view."""
    image = photo(400, 300, seed=30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated_tag = hash_image(encode(image, "JPEG", quality=95, exif=exif), frozenset({"pdq"}))
    plain = hash_image(encode(image, "JPEG", quality=95), frozenset({"pdq"}))
    assert (rotated_tag.pdq, rotated_tag.width) == (plain.pdq, 400)


# ---------------------------------------------------------------- limits and broken input


def test_decompression_bomb_fails_from_the_header() -> None:
    """A 30000x30000 PNG declared in 70 bytes is refused before decoding (a decode attempt would have
    reported a truncated image instead: there is no pixel data)."""
    bomb = raw_png(30000, 30000, 8, 2)
    assert len(bomb) < 100
    for want in (DIGESTS, ALL):
        with pytest.raises(DecodeError) as caught:
            hash_image(bomb, want)
        assert caught.value.reason == "too_many_pixels"


def test_pixel_limit_applies_without_pillow_warnings() -> None:
    """A size over our limit but under Pillow's own raises too_many_pixels and warns nothing."""
    header_only = raw_png(2000, 2000, 8, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DecodeError) as caught:
            hash_image(header_only, ALL, DecodeLimits(max_pixels=1_000_000))
    assert caught.value.reason == "too_many_pixels"


def test_frame_limit(corpus: dict[str, bytes]) -> None:
    """An animation with more frames than allowed is refused; at the limit it is hashed."""
    with pytest.raises(DecodeError) as caught:
        hash_image(corpus["gif_animated"], ALL, DecodeLimits(max_frames=2))
    assert caught.value.reason == "too_many_frames"
    assert hash_image(corpus["gif_animated"], ALL, DecodeLimits(max_frames=3)).pdq is not None


@pytest.mark.parametrize(
    "name", ["jpeg_large", "jpeg_progressive", "png_rgb_large", "webp_lossy", "bmp", "tiff"]
)
def test_truncated_images_are_truncated(corpus: dict[str, bytes], name: str) -> None:
    """A body cut short (an interrupted download) is `truncated_image`, never half-grey hashes."""
    data = corpus[name]
    with pytest.raises(DecodeError) as caught:
        hash_image(data[: len(data) * 2 // 3], ALL)
    assert caught.value.reason == "truncated_image"


def test_garbage_after_magic_is_corrupt() -> None:
    """JPEG magic followed by an HTML page is a corrupt image."""
    with pytest.raises(DecodeError) as caught:
        hash_image(b"\xff\xd8\xff" + HTML * 4, ALL)
    assert caught.value.reason == "corrupt_image"


# ---------------------------------------------------------------- near duplicates


def test_near_duplicates_are_close_and_strangers_far() -> None:
    """A recompressed, resized copy stays within the PDQ match threshold (31); another picture does not."""
    original = photo(1200, 900, seed=40)
    listed = hash_image(encode(original, "JPEG", quality=92), ALL)
    copy = hash_image(encode(original.resize((640, 480), Image.Resampling.BILINEAR), "JPEG", quality=55), ALL)
    stranger = hash_image(encode(photo(1200, 900, seed=41), "JPEG", quality=92), ALL)
    assert listed.pdq and copy.pdq and stranger.pdq and listed.phash and copy.phash
    assert hamming(listed.pdq, copy.pdq) <= 31
    assert hamming(listed.pdq, stranger.pdq) > 31
    assert hamming(listed.phash, copy.phash) <= 10


# ---------------------------------------------------------------- scanner hash FILE


def test_hash_file_record(tmp_path, corpus: dict[str, bytes]) -> None:
    """The CLI record: hex strings of exactly hash_image's values, plus quality, size and format."""
    path = tmp_path / "picture.jpg"
    path.write_bytes(corpus["jpeg_small"])
    record = hash_file_record(path)
    hashes = hash_image(corpus["jpeg_small"], ALL)
    assert list(record) == [
        "path", "md5", "sha1", "sha256", "pdq", "pdq_quality", "phash", "dhash", "width", "height", "format",
    ]  # fmt: skip
    assert record["path"] == str(path)
    for name in ("md5", "sha1", "sha256", "pdq", "phash", "dhash"):
        assert record[name] == getattr(hashes, name).hex()
    assert (record["pdq_quality"], record["width"], record["height"], record["format"]) == (
        hashes.pdq_quality,
        300,
        200,
        "jpeg",
    )


def test_hash_file_record_names_the_file_on_failure(tmp_path) -> None:
    """A non-image or missing file is an InputError naming the file."""
    page = tmp_path / "page.jpg"
    page.write_bytes(HTML)
    with pytest.raises(InputError, match=r"page\.jpg.*not_an_image"):
        hash_file_record(page)
    with pytest.raises(InputError, match=r"missing\.png"):
        hash_file_record(tmp_path / "missing.png")
