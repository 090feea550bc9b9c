"""One typed configuration: TOML file, then command-line flags on top, validated once."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from scanner.errors import ConfigError
from scanner.fetch import FetchConfig
from scanner.hashing import DecodeLimits
from scanner.hashtypes import REGISTRY
from scanner.lists import MatchConfig
from scanner.plugins import PluginConfig, load_plugins
from scanner.regularfile import open_regular
from scanner.reports.review import ReviewConfig
from scanner.screen import AuditConfig
from scanner.sources import SourceOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BAD_SHARD_POLICIES = ("fail", "skip")
DEFAULT_OUT = "reports/scan"
KIB, GIB = 1024, 1024**3


@dataclass(frozen=True, slots=True)
class Range:
    """The values a numeric setting may take: low..high, low itself excluded when open (a timeout of 0 is
    no timeout); floats must also be finite (TOML and float() both read nan and inf)."""

    low: float
    high: float
    open: bool = False
    meaning: str = ""  # what the low end means, when it is special (workers = 0: one per core)

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return (self.low < value if self.open else self.low <= value) and value <= self.high

    def text(self) -> str:
        low = f"{self.low:,}" + (f" ({self.meaning})" if self.meaning else "")
        return f"above {low} and at most {self.high:,}" if self.open else f"from {low} to {self.high:,}"


SECONDS = Range(0, 3600, open=True)
RANGES: dict[str, Range] = {
    "source.rows_per_unit": Range(1, 10**9),
    "source.max_member_bytes": Range(KIB, 2 * GIB),
    "fetch.max_in_flight": Range(1, 100_000),
    "fetch.max_per_host": Range(1, 10_000),
    "fetch.connect_timeout": SECONDS,
    "fetch.read_timeout": SECONDS,
    "fetch.total_timeout": Range(0, 86_400, open=True),
    "fetch.dns_timeout": SECONDS,
    "fetch.dns_cache_ttl": Range(0, 86_400, open=True),
    "fetch.dns_negative_ttl": Range(0, 86_400),
    "fetch.dns_cache_size": Range(1, 10_000_000),
    "fetch.connect_failure_ttl": Range(0, 3600),
    "fetch.max_bytes": Range(KIB, 2 * GIB),
    "fetch.max_url_length": Range(16, 1_000_000),
    "fetch.max_redirects": Range(0, 100),
    "fetch.max_retries": Range(0, 100),
    "fetch.retry_backoff": Range(0, 3600),
    "fetch.max_retry_after": Range(0, 86_400),
    "fetch.max_header_size": Range(KIB, 1024 * KIB),
    "fetch.max_headers": Range(1, 100_000),
    "hashing.max_pixels": Range(1, 2**34),
    "hashing.max_frames": Range(1, 1_000_000),
    "hashing.max_scans": Range(1, 1_000_000),
    "hashing.decode_timeout": SECONDS,
    "match.pdq_threshold": Range(0, REGISTRY["pdq"].bits),
    "match.pdq_min_quality": Range(0, 100),
    "match.phash_threshold": Range(0, REGISTRY["phash"].bits),
    "match.dhash_threshold": Range(0, REGISTRY["dhash"].bits),
    "run.workers": Range(0, 4096, meaning="one per core"),
    "run.hashers_per_unit_worker": Range(1, 256),
    "run.rows_in_flight": Range(1, 1_000_000),
    "run.body_bytes_in_flight": Range(KIB, 64 * GIB),
    "run.units_in_flight": Range(1, 10_000),
    "review.flood_rows": Range(0, 10**12),
    "review.flood_share": Range(0, 1),
    "review.flood_min_rows": Range(0, 10**12),
    "run.commit_every_s": SECONDS,
    "run.commit_every_rows": Range(1, 10**9),
}
"""Every numeric setting's allowed values, by its dotted name (tests check that none is missing)."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How the scan is executed; none of it changes the results."""

    workers: int = 0
    # A unit worker's fetch loop costs about a tenth of the CPU of the hashing behind it on photos (a third
    # on thumbnails): one loop feeds several hashing processes, and memory grows by a hashing process, the
    # smaller one, per added core.
    hashers_per_unit_worker: int = 4
    # Rows waiting on the network hold no body: thousands may wait on DNS and connects at once, while
    # body_bytes_in_flight bounds the bodies in memory, from their first byte read until hashed.
    rows_in_flight: int = 4096
    body_bytes_in_flight: int = 64 * 1024 * 1024  # fetch-ahead past this buys nothing: hashing is the bound
    units_in_flight: int = 3
    on_bad_shard: str = "fail"
    runner: str = "local"
    ray_address: str | None = None
    progress: bool = True
    lists_first: bool = False  # every list loaded and indexed before the first request (the old, slow start)
    # A unit still running commits the rows it finished this often, or once this many are waiting (all unit
    # workers together): a kill loses at most that much work, however slow the unit's other rows.
    commit_every_s: float = 10.0
    commit_every_rows: int = 1000

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class HashListSpec:
    """One list to load: its spec (PATH, NAME=PATH, TYPE:PATH, NAME=TYPE:PATH) and per-list thresholds."""

    spec: str
    thresholds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScanConfig:
    """Everything a scan needs to know, from the config file and flags."""

    inputs: tuple[str, ...] = ()
    out: str = DEFAULT_OUT
    hashlists: tuple[HashListSpec, ...] = ()
    source: SourceOptions = field(default_factory=SourceOptions)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    hashing: DecodeLimits = field(default_factory=DecodeLimits)
    match: MatchConfig = field(default_factory=MatchConfig)
    run: RunConfig = field(default_factory=RunConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    plugins: PluginConfig = field(default_factory=PluginConfig)

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain data, for the manifest."""
        return dataclasses.asdict(self)


SECTIONS = {
    "source": SourceOptions,
    "fetch": FetchConfig,
    "hashing": DecodeLimits,
    "match": MatchConfig,
    "run": RunConfig,
    "audit": AuditConfig,
    "review": ReviewConfig,
    "plugins": PluginConfig,
}


def load_config(path: str | None, overrides: dict[str, Any]) -> ScanConfig:
    """Read the TOML file (if any) and apply flag overrides given as {"section.key" or "key": value}."""
    data = _read_toml(path) if path else {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        target[key] = value
    return build_config(data, path or "flags")


def build_config(data: dict[str, Any], origin: str) -> ScanConfig:
    """Validate plain data into a ScanConfig; unknown keys and wrong types are errors naming the key."""
    data = dict(data)
    lists = tuple(_hashlist_spec(item, origin) for item in data.pop("hashlist", []))
    sections = {name: _section(cls, data.pop(name, {}), name, origin) for name, cls in SECTIONS.items()}
    sections["source"] = _with_match_columns(sections["source"], sections["audit"])
    top = {f.name for f in dataclasses.fields(ScanConfig)} - set(SECTIONS) - {"hashlists"}
    unknown = set(data) - top
    if unknown:
        raise ConfigError(f"{origin}: unknown setting(s) {', '.join(sorted(unknown))}")
    config = ScanConfig(
        inputs=_strings(data.get("inputs", ()), "inputs", origin),
        out=_strings([data.get("out", DEFAULT_OUT)], "out", origin)[0],
        hashlists=lists,
        **sections,
    )
    if config.run.on_bad_shard not in BAD_SHARD_POLICIES:
        raise ConfigError(f"{origin}: run.on_bad_shard must be one of {', '.join(BAD_SHARD_POLICIES)}")
    load_plugins(config.plugins)  # their hash types registered before any list is read
    return config


def _strings(values: Any, key: str, origin: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{origin}: {key} must be {'a list of paths' if key == 'inputs' else 'a path'}")
    return tuple(values)


def _with_match_columns(source: SourceOptions, audit: AuditConfig) -> SourceOptions:
    """Sources also read the dataset hash columns the scan matches (--match-column)."""
    columns = tuple(dict.fromkeys((*source.extra_cols, *audit.columns)))
    return dataclasses.replace(source, extra_cols=columns)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open_regular(path) as handle:  # a FIFO must not hang the start
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def _section(cls: type, values: Any, name: str, origin: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{origin}: unknown setting(s) {', '.join(f'{name}.{k}' for k in sorted(unknown))}")
    defaults = cls()
    checked = {
        key: _in_range(
            _typed(getattr(defaults, key), value, f"{name}.{key}", origin), f"{name}.{key}", origin
        )
        for key, value in values.items()
    }
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: [{name}] {exc}") from exc


def _in_range(value: Any, key: str, origin: str) -> Any:
    allowed = RANGES.get(key)
    if allowed is not None and not allowed.holds(value):
        raise ConfigError(f"{origin}: {key} must be {allowed.text()}, not {value!r}")
    return value


def _typed(default: Any, value: Any, key: str, origin: str) -> Any:
    """Coerce a value to the default's type where that is lossless; refuse anything else."""
    if isinstance(default, tuple):
        # Every list setting of a section holds text (columns, CIDRs): a number would be misread
        # (allowed_networks = [5] as 0.0.0.5/32).
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {key} must be a list of strings, not {value!r}")
        return tuple(value)
    if isinstance(default, bool) or default is None:
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key} must be true or false")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, type(default)) or isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be {type(default).__name__}, not {value!r}")
    return value


def _threshold(value: Any, key: str, origin: str) -> int:
    """A per-list threshold: a whole number of bits (its range is checked against the loaded list)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            f"{origin}: [[hashlist]] {key} must be a whole number of bits (0 or more), not {value!r}"
        )
    return value


def _hashlist_spec(item: Any, origin: str) -> HashListSpec:
    if isinstance(item, str):
        return HashListSpec(item)
    if not isinstance(item, dict) or "path" not in item:
        raise ConfigError(f"{origin}: each [[hashlist]] needs a path")
    item = dict(item)
    path = item.pop("path")
    name, kind = item.pop("name", None), item.pop("type", None)
    spec = f"{kind}:{path}" if kind else path
    spec = f"{name}={spec}" if name else spec
    thresholds = {
        k.removesuffix("_threshold"): _threshold(v, k, origin)
        for k, v in item.items()
        if k.endswith("_threshold")
    }
    extra = set(item) - {f"{k}_threshold" for k in thresholds}
    if extra:
        raise ConfigError(f"{origin}: unknown [[hashlist]] setting(s) {', '.join(sorted(extra))}")
    return HashListSpec(spec, thresholds)
