"""python-threatexchange SignalType classes as hash types: the way in for an algorithm the scanner does not
carry (PhotoDNA through a licensee's own pytx extension, vPDQ, ...). docs/plugins.md.

A plug-in is named as `module:Class` (--signal-type, plugins.signal_types) or as a module whose TX_MANIFEST
(a pytx ThreatExchangeExtensionManifest) lists signal types (--tx-extension, plugins.tx_extensions). Each
becomes one HashType (computed from images, index "signal": its name, its "module:Class") and one
SignalHasher. Loading is idempotent and done in every process that needs the registry: where the config
is built, in each unit worker and in each hashing worker (both get the PluginConfig).

Names: the signal type's get_name(); one that a built-in type already has (pytx's "pdq") is registered as
"pytx_<name>", so the built-in stays the fast path and a report says which one matched.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from scanner.errors import ConfigError
from scanner.hashing.hashers import HASHERS, SignalHasher, register_hasher
from scanner.hashtypes import IMAGE, REGISTRY, SIGNAL, HashType, register, unregister

PYTX_PREFIX = "pytx_"  # a plug-in named like a built-in type is registered under this prefix
KEY_BYTES = 16  # list keys: a BLAKE2b digest of the validated signal string (lists/hashtypes.py)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INSTALL = "python-threatexchange is not installed: pip install 'scanner[plugins]'"


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """The signal-type plug-ins a scan loads ([plugins] in the config, --signal-type, --tx-extension)."""

    signal_types: tuple[str, ...] = ()  # "module:Class", a pytx SignalType that hashes bytes
    tx_extensions: tuple[str, ...] = ()  # modules with a TX_MANIFEST: all their signal types

    def __post_init__(self) -> None:
        for spec in self.signal_types:
            module, sep, name = spec.partition(":")
            if not (module and sep and name):
                raise ConfigError(f"--signal-type {spec!r}: expected MODULE:CLASS")


def load_plugins(config: PluginConfig) -> tuple[HashType, ...]:
    """Register every configured signal type (again: a no-op) and return their hash types."""
    if config in _LOADED:  # a hashing worker asks once per body
        return _LOADED[config]
    classes = [_signal_class(spec) for spec in config.signal_types]
    for module in config.tx_extensions:
        classes.extend(_manifest_signal_types(module))
    loaded = _LOADED[config] = tuple(dict.fromkeys(_registered(cls) for cls in classes))
    return loaded


_LOADED: dict[PluginConfig, tuple[HashType, ...]] = {}


def _signal_class(spec: str) -> Any:
    module, _, qualname = spec.partition(":")
    found: Any = _imported(module, f"--signal-type {spec}")
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(f"--signal-type {spec}: module {module} has no {qualname}")
    return found


def _manifest_signal_types(module: str) -> tuple[Any, ...]:
    """The signal types a pytx extension's TX_MANIFEST lists (pytx's own rules: the module, its manifest)."""
    _pytx()
    from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest  # optional extra

    _imported(module, f"--tx-extension {module}")  # our message for a module that will not import
    try:
        manifest = ThreatExchangeExtensionManifest.load_from_module_name(module)
    except ValueError as exc:
        raise ConfigError(f"--tx-extension {module}: {exc}") from None
    return tuple(manifest.signal_types)


def _imported(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module} ({exc})") from None


def _pytx() -> Any:
    try:
        from threatexchange.signal_type import signal_base  # optional extra
    except ImportError:
        raise ConfigError(_INSTALL) from None
    return signal_base


def _registered(signal_type: Any) -> HashType:
    """The hash type of one signal type: registered now, or already (same class); a clash is refused."""
    base = _pytx()
    spec = f"{getattr(signal_type, '__module__', '?')}:{getattr(signal_type, '__qualname__', '?')}"
    if not (isinstance(signal_type, type) and issubclass(signal_type, base.SignalType)):
        raise ConfigError(f"signal type {spec}: not a python-threatexchange SignalType")
    _check_hashes_bytes(signal_type, spec, base)
    name = _name(signal_type, spec)
    known = REGISTRY.get(name)
    if known is not None and known.signal is None:  # a built-in's name: pytx's pdq beside ours
        name = PYTX_PREFIX + name
        known = REGISTRY.get(name)
    if known is not None:
        if known.signal != spec:
            owner = known.signal or "a built-in type"
            raise ConfigError(f"signal type {spec}: the name {name!r} is taken by {owner}")
        return known
    hash_type = register(HashType(name, KEY_BYTES, IMAGE, SIGNAL, signal=spec))
    if name not in HASHERS:
        register_hasher(SignalHasher(name))
    return hash_type


def _check_hashes_bytes(signal_type: type, spec: str, base: Any) -> None:
    """Bodies are bytes in memory, never files: a plug-in must hash bytes (and compare its strings)."""
    if not issubclass(signal_type, base.BytesHasher):
        kind = "files" if issubclass(signal_type, base.FileHasher) else "no content the scanner has"
        raise ConfigError(
            f"signal type {spec} hashes {kind}: the scanner hashes bytes in memory and never puts an image "
            "in a file, so only a BytesHasher can be a plug-in"
        )


def _name(signal_type: Any, spec: str) -> str:
    try:
        name = signal_type.get_name()
    except Exception as exc:  # the plug-in's own code
        raise ConfigError(f"signal type {spec}: get_name() failed ({type(exc).__name__})") from None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"signal type {spec}: its name {name!r} is not lower_snake_case (a report column)")
    return name


def provenance(config: PluginConfig) -> list[dict[str, str | None]]:
    """What each plug-in is, for the manifest and the resume fingerprint: its hash type, its class, the
    version of the distribution that holds it, and the built-in type it stands beside (pytx_pdq: pdq)."""
    found = []
    for hash_type in load_plugins(config):
        spec = hash_type.signal or ""
        alias = hash_type.name.removeprefix(PYTX_PREFIX)
        found.append(
            {
                "hash_type": hash_type.name,
                "signal_type": spec,
                "version": _version(spec.partition(":")[0]),
                "built_in": alias if alias != hash_type.name and alias in REGISTRY else None,
            }
        )
    return found


def _version(module: str) -> str | None:
    """The installed version of the distribution a module comes from (None: not installed as one)."""
    top = module.partition(".")[0]
    for distribution in metadata.packages_distributions().get(top, ()):
        try:
            return f"{distribution} {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def unload_plugins() -> None:
    """Remove every plug-in's hash type and hasher (tests: the next test sees only the built-ins)."""
    _LOADED.clear()
    for name in [name for name, hash_type in REGISTRY.items() if hash_type.signal is not None]:
        HASHERS.pop(name, None)
        unregister(name)
