"""Bytes to pixels, bounded: sniff the format, check the header against limits, decode the first frame."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from scanner.errors import ScannerError
from scanner.imageformat import sniff_format
from scanner.outcomes import DecodeReason

# Pillow's own decompression-bomb threshold: at or below it Pillow never warns before our check runs.
DEFAULT_MAX_PIXELS = 89_478_485
# Scans in one JPEG: each one, even empty, costs a pass over every block of the image, so 10,000 empty scans
# (100 KB) cost about a minute of CPU. Real progressive JPEGs have about 10 (libjpeg's default script) and
# rarely more than a few dozen; libjpeg-turbo's own fuzzers stop at 500.
DEFAULT_MAX_SCANS = 500
# CPU seconds one body may take to decode in a hashing worker before the worker is replaced (decode_timeout).
DEFAULT_DECODE_TIMEOUT = 5.0
# A JPEG start-of-scan marker. Entropy-coded data stuffs every 0xFF with 0x00, so counting these bytes is an
# upper bound on the scans (metadata segments may hold a few more, e.g. an EXIF thumbnail's).
_JPEG_SOS = b"\xff\xda"

# Sniffed format -> the Pillow plugins allowed to parse it (None: recognised, but not decodable here).
# Naming the plugin keeps Pillow from guessing among its ~40 formats on untrusted bytes.
_PILLOW_FORMATS: dict[str, tuple[str, ...] | None] = {
    "jpeg": ("JPEG",),
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "bmp": ("BMP",),
    "tiff": ("TIFF",),
    "ico": ("ICO",),
    "avif": ("AVIF",),
    "jpeg2000": ("JPEG2000",),
    "heif": None,
}

# 16-bit PNG rows are big-endian; reading them as little-endian keeps each sample's LOW byte (see pdq.py).
_PNG_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


class DecodeError(ScannerError):
    """The bytes are not a usable image; `reason` is a short, stable snake_case code for reports.

    `digests` holds the wanted digests of the bytes (hash_image computes them before decoding), so a body
    that is not a usable image (a video, a huge or corrupt file) can still be matched against exact lists.
    """

    def __init__(self, reason: DecodeReason, detail: str | None = None) -> None:
        self.reason: DecodeReason = reason
        self.detail = detail
        self.digests: dict[str, bytes] = {}
        super().__init__(reason if detail is None else f"{reason}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle reason, detail and digests intact, for errors crossing a process boundary."""
        return (type(self), (self.reason, self.detail), {"digests": self.digests})


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds checked from the header, before any pixel is decoded, and the CPU budget of one decode.

    A max_pixels above Pillow's Image.MAX_IMAGE_PIXELS lets Pillow warn on sizes between the two, and
    Pillow itself refuses twice its own limit (reported as too_many_pixels all the same). decode_timeout is
    CPU seconds, enforced in hashing workers (procguard.cpu_budget): past it the worker is replaced and the
    row is invalid/decode_timeout.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int = 1000
    max_scans: int = DEFAULT_MAX_SCANS
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_frames", "max_scans", "decode_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"hashing.{name} must be a number above 0, not {getattr(self, name)!r}")


DEFAULT_LIMITS = DecodeLimits()


def open_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[Image.Image, str]:
    """Parse the header only (no pixels) and enforce the limits; returns the lazy image and its format."""
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError(DecodeReason.NOT_AN_IMAGE)
    _check_scans(data, fmt, limits)
    plugins = _PILLOW_FORMATS[fmt]
    Image.init()  # registers every plugin once, so Image.OPEN lists what this Pillow can decode
    if plugins is None or not set(plugins) <= Image.OPEN.keys():
        raise DecodeError(DecodeReason.UNSUPPORTED_FORMAT, fmt)
    try:
        image = Image.open(io.BytesIO(data), formats=plugins)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(DecodeReason.TOO_MANY_PIXELS, str(exc)) from exc
    # Pillow raises many exception types on hostile headers; all of them mean "not usable".
    except Exception as exc:
        raise _failure(exc, data, fmt) from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        raise DecodeError(DecodeReason.TOO_MANY_PIXELS, f"{width}x{height}")
    if width <= 0 or height <= 0:
        raise DecodeError(DecodeReason.CORRUPT_IMAGE, f"{width}x{height}")
    try:
        frames = getattr(image, "n_frames", 1)
    except Exception as exc:
        raise _failure(exc, data, fmt) from exc
    if frames > limits.max_frames:
        raise DecodeError(DecodeReason.TOO_MANY_FRAMES, str(frames))
    return image, fmt


def _check_scans(data: bytes, fmt: str, limits: DecodeLimits) -> None:
    """Refuse a JPEG with more scans than the limit before parsing it (see DEFAULT_MAX_SCANS)."""
    if fmt == "jpeg" and (scans := data.count(_JPEG_SOS)) > limits.max_scans:
        raise DecodeError(DecodeReason.TOO_MANY_SCANS, str(scans))


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """The first frame, decoded as Pillow does (what imagehash sees) and as the C++ PDQ reference does."""

    frame: Image.Image
    reference_frame: Image.Image
    format: str


def decode_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Check the header against the limits, then decode the pixels of the first frame."""
    image, fmt = open_image(data, limits)
    low_byte_rawmode = _png_low_byte_rawmode(image)
    frame = _load(image, data, fmt)
    if low_byte_rawmode is None:
        return DecodedImage(frame, frame, fmt)
    reference, _ = open_image(data, limits)
    # A tile is (decoder, extents, offset, decoder args); for PNG the args are the raw mode.
    reference.tile = [(*tile[:3], low_byte_rawmode) for tile in reference.tile]
    return DecodedImage(frame, _load(reference, data, fmt), fmt)


def _png_low_byte_rawmode(image: Image.Image) -> str | None:
    """For a 16-bit colour PNG, the raw mode that keeps the low byte of each sample (see pdq.py)."""
    if image.format != "PNG" or len(image.tile) != 1:
        return None
    return _PNG_LOW_BYTE_RAWMODES.get(image.tile[0][3])


def _load(image: Image.Image, data: bytes, fmt: str) -> Image.Image:
    """Decode the pixels of the current (first) frame."""
    try:
        image.load()
    except Exception as exc:
        raise _failure(exc, data, fmt) from exc
    return image


def _failure(exc: Exception, data: bytes, fmt: str) -> DecodeError:
    """Classify a Pillow failure as truncated (the data stops early) or corrupt (anything else)."""
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower() or _riff_is_short(data, fmt):
        return DecodeError(DecodeReason.TRUNCATED_IMAGE, str(exc))
    return DecodeError(DecodeReason.CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}")


def _riff_is_short(data: bytes, fmt: str) -> bool:
    """WebP's decoder gives no reason on failure, but its RIFF header states the full length."""
    return fmt == "webp" and int.from_bytes(data[4:8], "little") + 8 > len(data)
