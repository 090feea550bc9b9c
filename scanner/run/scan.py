"""A scan as a Job: plan the inputs into units, fingerprint the shards, check a resumed checkpoint's rows,
and run each unit's rows through the pipeline's FetchPolicy."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from scanner.config import ScanConfig
from scanner.errors import ConfigError
from scanner.lists import HashList, Matcher
from scanner.pipeline import FetchPolicy, HashFn, Pipeline, Progress, build_stages, commit_every
from scanner.planner import Plan, WorkUnit, plan
from scanner.run import lifecycle
from scanner.run.checkpoint import HUB_COMMITS, Checkpoint
from scanner.run.job import Job, Run, open_run
from scanner.sources import Source, SourceOptions, expand_inputs, open_source
from scanner.sources.folder import FolderSource
from scanner.sources.hub import Pinned, pin_inputs
from scanner.sources.storage import input_signature

OPEN_SOURCES_PER_PROCESS = 8


def signature(path: str, source: Source) -> list[object]:
    """What the resume fingerprint and the manifest record of an input: a folder's from the plan's own walk
    (the rows it listed), a shard's from its stat."""
    return source.signature if isinstance(source, FolderSource) else input_signature(path)


class ScanJob(Job):
    """Shards planned into units of rows, each row fetched, hashed and matched."""

    name = "scan"
    lists_later = True

    def __init__(self, config: ScanConfig) -> None:
        self.config = config
        self.plan: Plan | None = None
        self.pins: list[Pinned] = []  # hf:// inputs and the commit each is read at

    def check(self) -> None:
        if not self.config.inputs:
            raise ConfigError("no input shards given")
        if not self.config.hashlists:
            raise ConfigError(
                "no hash list given: a scan needs at least one --hashlist PATH (formats: hashlists/README.md)"
            )

    def load(self) -> list[WorkUnit]:
        config = self.config
        inputs, self.pins = pin_inputs(list(config.inputs))
        self.plan = plan(expand_inputs(inputs), config.source, config.run.on_bad_shard)
        return self.plan.units

    def fingerprint(self, lists: list[HashList]) -> dict:
        return lifecycle.fingerprint(
            self.config,
            lists,
            inputs=[[p, *signature(p, source)] for p, source in self._plan.sources.items()],
            skipped=sorted(self._plan.skipped),
            **({HUB_COMMITS: {p.key: p.commit for p in self.pins}} if self.pins else {}),
        )

    def check_resumed(self, checkpoint: Checkpoint, units: list[WorkUnit]) -> None:
        checkpoint.check_rows({u.id: (u.shard, u.span.start, u.span.stop) for u in units})

    def work(self, run: Run) -> ScanWork:
        return ScanWork(self._plan.sources)

    def manifest(self, run: Run, summary: dict) -> dict:
        """Provenance with the inputs' kinds and sizes, the skipped shards and the unit count."""
        config = self.config
        inputs = [
            {"path": path, "kind": source.kind, "signature": signature(path, source), **self._commit(path)}
            for path, source in self._plan.sources.items()
        ]
        return lifecycle.manifest(
            config,
            run.lists,
            inputs,
            allow_private_networks=config.fetch.allow_private_networks,
            skipped_shards=summary["skipped_shards"],
            units=len(run.units),
            **({"hub_revisions": [p.record() for p in self.pins]} if self.pins else {}),
        )

    def _commit(self, path: str) -> dict[str, str]:
        """The revision asked for and the commit read, for a shard of an hf:// input."""
        for pinned in self.pins:
            if path.startswith(pinned.root):
                return {"revision": pinned.revision, "commit": pinned.commit}
        return {}

    def keep_hashes(self) -> bool:
        return self.config.audit.keep_hashes

    def skipped(self) -> dict[str, str]:
        return self._plan.skipped

    @property
    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("the scan's inputs are read by load() first")
        return self.plan


class ScanWork:
    """A scan's units in any process: the shards this process opened, or (pickled to another process) the
    shards opened there on first use."""

    hashing = True

    def __init__(self, sources: Mapping[str, Source] | None = None) -> None:
        self.sources = sources
        self._folders: frozenset[str] = frozenset()

    def __getstate__(self) -> dict:
        """An opened shard stays in the process that opened it; which shards are folders goes with the work
        (each of their spans names its files, as the plan listed them: they are not listed again)."""
        folders = frozenset(p for p, s in (self.sources or {}).items() if isinstance(s, FolderSource))
        return {"sources": None, "folders": folders}

    def __setstate__(self, state: dict) -> None:
        self.sources = state["sources"]
        self._folders = state.get("folders", frozenset())

    def opened(self, options: SourceOptions) -> OpenedSources:
        """The shards as this process reads them: opened on first use, folders without listing them."""
        return OpenedSources(options, self._folders)

    def open(
        self, config: ScanConfig, matcher: Matcher, hash_fn: HashFn | None, progress: Progress | None
    ) -> Pipeline:
        """The stages every runner drives, built one way, so a unit is checked alike on any runner; built
        inside the event loop that runs the units (the fetcher's sessions belong to it)."""
        stages = build_stages(config, hash_fn, matcher)
        sources = self.sources if self.sources is not None else self.opened(config.source)
        policy = FetchPolicy(
            stages,
            sources,
            skip_bad_shards=config.run.on_bad_shard == "skip",
            max_url_length=config.fetch.max_url_length,
        )
        return Pipeline(policy, config.run.rows_in_flight, progress, commit_every(config))


class OpenedSources(OrderedDict):
    """Shards opened on first use by this process, the least recently used closed past a small bound."""

    def __init__(self, options: SourceOptions, folders: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self._options = options
        self._folders = folders  # read from the files their spans name, not listed again

    def __missing__(self, shard: str) -> Source:
        if shard in self._folders:
            source: Source = FolderSource(shard, self._options, listed=False)
        else:
            source = open_source(shard, self._options)
        self[shard] = source
        while len(self) > OPEN_SOURCES_PER_PROCESS:
            self.popitem(last=False)
        return source

    def __getitem__(self, shard: str) -> Source:
        source = super().__getitem__(shard)
        self.move_to_end(shard)
        return source


def prepare(config: ScanConfig, restart: bool = False) -> Run:
    """Validate inputs and lists before any fetch, and pick up a previous run's committed units."""
    return open_run(ScanJob(config), restart)
