"""The steps every run shares, scan, rematch and rescan alike, each defined once: load the lists, fingerprint
what a resumption must find unchanged, skip a run already complete, build the manifest, and finish (merge the
units into the report files, write summary and manifest, push a mirror, seal the checkpoint)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scanner import __version__
from scanner.config import ScanConfig
from scanner.errors import ConfigError
from scanner.hashtypes import IMAGE, REGISTRY
from scanner.lists import HashList, ListSpec, MatchConfig, Matcher, load_hashlist
from scanner.lists.deferred import DeferredList, deferred
from scanner.plugins import provenance
from scanner.reports.expanded import EXPANDED_FILE
from scanner.reports.hashes import merge_hashes
from scanner.reports.review import Review
from scanner.reports.writer import merge_reports, summary, write_summary_and_manifest
from scanner.run.checkpoint import SETTINGS_SHOWN, Checkpoint, finished_summary

PRIVATE_SETTINGS = frozenset({"fetch.contact", "fetch.user_agent"})


@dataclass(slots=True)
class ScanResult:
    """Where the reports are and what the summary says."""

    out: Path
    summary: dict
    kept_rows: int = 0  # rows of the units an earlier, interrupted run of the same command committed
    earlier: bool = False  # the same run had already completed: nothing ran, the summary is that run's


def load_lists(
    config: ScanConfig, later: bool = False, fresh: bool = False
) -> tuple[list[HashList | DeferredList], Matcher]:
    """The configured hash lists and negative lists, and the matcher over them with each list's own
    thresholds (a negative list's entries only ever suppress another list's match). Lists that may hold URL
    or domain entries are loaded now; with `later` (a job that matches off the event loop), lists of one
    image hash type load in the matcher's thread (lists/deferred.py) unless every list must be whole before
    the first request (lists_later). Their digests are taken now, unless the run is `fresh` (it resumes no
    checkpoint): then by their load (settled)."""
    whole = not (later and lists_later(config))
    lists: list[HashList | DeferredList] = [
        _list(ListSpec.parse(spec.spec), whole, fresh) for spec in config.hashlists
    ]
    lists += [load_negative(spec) for spec in config.review.negative_lists]
    negative = [hl.name for hl in lists[len(config.hashlists) :]]
    return lists, Matcher.from_lists(lists, match_config(config, lists), negative)


def load_negative(spec: str) -> HashList:
    """A negative list holds image hashes only: a listed URL is never fetched, so it has nothing to undo."""
    loaded = load_hashlist(spec)
    other = sorted(name for name in loaded.entries if REGISTRY[name].computed_from != IMAGE)
    if other:
        raise ConfigError(f"{spec}: a negative list holds image hashes only, not {', '.join(other)}")
    return loaded


def skipped_entries(lists: list[HashList | DeferredList]) -> dict:
    """summary.json's `skipped_list_entries` (list -> type -> count and why), when any list skipped some."""
    skipped = {hl.name: hl.stats["skipped"] for hl in lists if hl.skipped}
    return {"skipped_list_entries": skipped} if skipped else {}


def lists_later(config: ScanConfig) -> bool:
    """Whether image-hash lists may load, and their indexes build, while rows are fetched: not when the
    dataset's hash columns are screened against them before any request, nor with run.lists_first."""
    return not config.run.lists_first and not config.audit.match_columns


def _list(spec: ListSpec, whole: bool, fresh: bool) -> HashList | DeferredList:
    later = None if whole else deferred(spec, digest_now=not fresh)
    return later if later is not None else load_hashlist(spec)


def digests_pending(lists: list[HashList | DeferredList]) -> bool:
    """Whether a list's digest is taken by its load (a fresh run's list loaded while rows are fetched)."""
    return any(isinstance(hl, DeferredList) and hl.digest_by_load for hl in lists)


def settled(fingerprint: dict, lists: list[HashList | DeferredList]) -> dict:
    """The fingerprint with every list's digest, waiting for the loads that take them (their errors are
    raised here)."""
    digests = [hl.waited_digest() if isinstance(hl, DeferredList) else hl.digest for hl in lists]
    return {**fingerprint, "lists": [[hl.name, digest] for hl, digest in zip(lists, digests, strict=True)]}


def match_config(config: ScanConfig, lists: list[HashList | DeferredList]) -> MatchConfig:
    """The match settings with each list's own thresholds; two lists may not share a name."""
    names = [hl.name for hl in lists]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"two hash lists are named {', '.join(duplicated)}; name them with NAME=PATH")
    per_list = {
        hl.name: spec.thresholds for hl, spec in zip(lists, config.hashlists, strict=False) if spec.thresholds
    }
    return dataclasses.replace(config.match, list_thresholds={**config.match.list_thresholds, **per_list})


def fingerprint(config: ScanConfig, lists: list[HashList | DeferredList], **inputs: object) -> dict:
    """What must not change between a run and its resumption: what it reads (`inputs`: a scan's shards,
    a rematch's or rescan's records), the lists, and the result-affecting settings (not run, out, inputs):
    their hash, which decides, and the settings themselves by dotted name, which a refusal lists."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("run", "out", "inputs")}
    plugins = provenance(config.plugins)  # a plug-in upgraded between a run and its resumption differs
    return {
        **inputs,
        **({"plugins": plugins} if plugins else {}),
        "lists": [[hl.name, hl.digest] for hl in lists],
        "settings": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest(),
        SETTINGS_SHOWN: _shown_settings(settings),
    }


def _shown_settings(settings: dict, prefix: str = "") -> dict:
    """Settings flattened to dotted names as JSON keeps them (tuples read back as lists); a setting that
    may name a person (contact, user agent) only as a digest."""
    flat: dict = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "match.list_thresholds":
            flat.update(_shown_settings(value, f"{name}."))
        elif name in PRIVATE_SETTINGS:
            flat[name] = "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def already_done(out: Path, checkpoint: Checkpoint) -> ScanResult | None:
    """The result of the same run completed earlier in this --out (same fingerprint), or None."""
    if not checkpoint.complete:
        return None
    return ScanResult(out, finished_summary(out), earlier=True)


def manifest(config: ScanConfig, lists: list[HashList | DeferredList], inputs: list, **extra: object) -> dict:
    """Provenance: version, command, effective config, lists with digests, inputs, and a run's own fields
    (finish adds the times)."""
    return {
        "scanner_version": __version__,
        "command": sys.argv,
        "config": config.to_dict(),
        "lists": [{**hl.stats, "bytes": hl.size} for hl in lists],
        "inputs": inputs,
        **({"plugins": plugins} if (plugins := provenance(config.plugins)) else {}),
        **extra,
    }


def finish(
    out: Path,
    checkpoint: Checkpoint,
    unit_ids: list[int],
    started_at: float,
    manifest: Callable[[dict], dict],
    *,
    skipped: dict[str, str] | None = None,
    extra: dict | None = None,
    keep_hashes: bool = True,
    merge_more: Callable[[], None] | None = None,
    review: Review | None = None,
) -> ScanResult:
    """Merge the units into the report files (hashes.parquet when `keep_hashes`; `merge_more` for a run's
    own files), write summary.json (with `extra` sections) and manifest.json (`manifest(summary)`, with
    the times added), push the reports to a mirror, and seal the checkpoint."""
    tally = merge_reports(out, checkpoint, unit_ids, review)
    (out / EXPANDED_FILE).unlink(missing_ok=True)  # an expansion of an earlier run's rows (--restart)
    if keep_hashes:
        merge_hashes(out, checkpoint, unit_ids)
    if merge_more is not None:
        merge_more()
    finished_at = time.time()
    summary_data = {**summary(tally, started_at, finished_at, skipped or {}), **(extra or {})}
    provenance = {
        **manifest(summary_data),
        "started_at": summary_data["started_at"],
        "finished_at": summary_data["finished_at"],
    }
    write_summary_and_manifest(out, summary_data, provenance)
    if checkpoint.mirror is not None:
        checkpoint.mirror.push_reports()
    checkpoint.seal()
    return ScanResult(out, summary_data)
