"""One typed configuration: TOML file, then command-line flags on top, validated once."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from scanner.errors import ConfigError
from scanner.fetch import FetchConfig
from scanner.hashing import DecodeLimits
from scanner.lists import MatchConfig
from scanner.screen import AuditConfig
from scanner.sources import SourceOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BAD_SHARD_POLICIES = ("fail", "skip")
DEFAULT_OUT = "reports/scan"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How the scan is executed; none of it changes the results."""

    workers: int = 0
    rows_in_flight: int = 128
    units_in_flight: int = 3
    on_bad_shard: str = "fail"
    runner: str = "local"
    ray_address: str | None = None
    progress: bool = True

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
        inputs=tuple(data.get("inputs", ())),
        out=str(data.get("out", DEFAULT_OUT)),
        hashlists=lists,
        **sections,
    )
    if config.run.on_bad_shard not in BAD_SHARD_POLICIES:
        raise ConfigError(f"{origin}: run.on_bad_shard must be one of {', '.join(BAD_SHARD_POLICIES)}")
    return config


def _with_match_columns(source: SourceOptions, audit: AuditConfig) -> SourceOptions:
    """Sources also read the dataset hash columns the scan matches (--match-column)."""
    columns = tuple(dict.fromkeys((*source.extra_cols, *audit.columns)))
    return dataclasses.replace(source, extra_cols=columns)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
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
        key: _typed(getattr(defaults, key), value, f"{name}.{key}", origin) for key, value in values.items()
    }
    try:
        return cls(**checked)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: [{name}] {exc}") from exc


def _typed(default: Any, value: Any, key: str, origin: str) -> Any:
    """Coerce a value to the default's type where that is lossless; refuse anything else."""
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
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
    thresholds = {k.removesuffix("_threshold"): int(v) for k, v in item.items() if k.endswith("_threshold")}
    extra = set(item) - {f"{k}_threshold" for k in thresholds}
    if extra:
        raise ConfigError(f"{origin}: unknown [[hashlist]] setting(s) {', '.join(sorted(extra))}")
    return HashListSpec(spec, thresholds)
