"""report.html: one self-contained page of a scan's figures, with inline SVG charts and no script at all.

Everything shown is escaped (URLs, keys and list names are untrusted); matched URLs appear only on request,
since the page may travel further than the reports it summarises. It never holds image content.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.hashtypes import REGISTRY
from scanner.outcomes import OUTCOMES, Liveness, Outcome, live_rate, liveness
from scanner.regularfile import NotRegularFileError, open_regular, read_capped
from scanner.reports import jsonl, safetext
from scanner.reports.expanded import ExpandedFigures, expanded_figures
from scanner.reports.files import atomic_open
from scanner.reports.verdicts import Verdicts
from scanner.reports.verify import MAX_JSON_BYTES, summary_schema, validate

REPORT_NAME = "report.html"
# Match distances of Hamming types (scanner.hashtypes: pdq, phash, dhash) are drawn as histograms spanning
# at least the type's histogram_bits and threshold; a distance outside 0..bits is not a real distance.
OUT_OF_RANGE = -1  # the distances counter's key for those
LISTED_MATCHES = 200
TOP_BARS = 25
BATCH_ROWS = 64 * 1024
COLOURS = {
    Outcome.MATCH: "#b3261e",
    Outcome.CLEAN: "#2e7d32",
    Outcome.DEAD: "#6b7280",
    Outcome.INVALID: "#d97706",
    Outcome.BLOCKED: "#7c3aed",
    Outcome.CHANGED: "#db2777",
    Outcome.UNCHECKED: "#94a3b8",
    Outcome.HELD: "#0e7490",
    Outcome.SUPPRESSED: "#a16207",
}
ACCENT = "#1f5fa8"
TRACK = "#eef0f3"  # the 100% a bar is drawn against
THRESHOLD_COLOUR = "#b3261e"
CHANGES = (  # a rescan's summary `changes` count, its label, and the outcome whose colour it takes
    ("newly_dead", "newly dead", Outcome.DEAD),
    ("newly_live", "newly live", Outcome.CLEAN),
    ("new_matches", "new matches", Outcome.MATCH),
    ("matches_back", "matches back", Outcome.MATCH),
    ("matches_gone", "matches gone", Outcome.BLOCKED),
    ("content_changed", "content changed", Outcome.CHANGED),
)
LIST_COLUMNS = ("name", "path", "format", "sha256", "digest", "counts")
INPUT_COLUMNS = ("path", "kind")
NOT_MEASURED = "not measured"
FAILURE_OUTCOMES = (Outcome.DEAD, Outcome.INVALID, Outcome.BLOCKED)  # reasons grouped under these first
# Safety settings and their defaults (scanner.config's, which a test holds equal): a run that loosened one
# says so at the top of the page. A cap counts as loosened when raised, any other setting when changed.
SAFETY_DEFAULTS = {
    ("fetch", "allow_private_networks"): (False, "private, loopback and link-local addresses were allowed"),
    ("fetch", "allowed_networks"): ([], "these networks were let through the address guard"),
    ("fetch", "verify_tls"): (True, "TLS certificates were not verified"),
    ("fetch", "max_bytes"): (16_777_216, "the body size cap was raised"),
    ("fetch", "max_redirects"): (10, "more redirects than the default were followed"),
    ("fetch", "max_url_length"): (4096, "longer URLs than the default were accepted"),
    ("fetch", "max_header_size"): (8190, "larger response headers than the default were accepted"),
    ("fetch", "max_headers"): (128, "more response headers than the default were accepted"),
    ("hashing", "max_pixels"): (89_478_485, "the decoded image size cap was raised"),
    ("hashing", "max_frames"): (1000, "the frame cap was raised"),
    ("hashing", "max_scans"): (500, "the progressive scan cap was raised"),
    ("hashing", "decode_timeout"): (5.0, "the decode deadline was raised"),
}
SIGNATURE_NOTE = (
    "The signature is what a resume compares to tell whether an input changed since this scan: a local "
    "file's size in bytes and modification time in nanoseconds, a remote object's size and ETag or version, "
    "a folder's file count and a digest of every file's path, size and time."
)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; base-uri 'none'"


@dataclass(slots=True)
class OutcomeFigures:
    """Counts read from outcomes.parquet: per outcome, status class, reason, and outcome per shard."""

    rows: int = 0
    outcomes: Counter = field(default_factory=Counter)
    status_classes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    reasons_by_outcome: dict[str, Counter] = field(default_factory=dict)
    by_shard: dict[str, Counter] = field(default_factory=dict)
    liveness: Counter = field(default_factory=Counter)  # rows per Liveness (scanner.outcomes.liveness)
    liveness_by_shard: dict[str, Counter] = field(default_factory=dict)

    @property
    def link_rot(self) -> float | None:
        """Dead rows / requested rows: 1 - live_rate; None when no URL was requested (not measured)."""
        return _rot(self.liveness)


def _rot(counts: Counter) -> float | None:
    rate = live_rate(counts[Liveness.LIVE], counts[Liveness.DEAD])
    return None if rate is None else 1 - rate


@dataclass(slots=True)
class MatchFigures:
    """Counts read from matches.jsonl, plus the first few records for the table."""

    total: int = 0
    by_list: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)
    by_hash_type: Counter = field(default_factory=Counter)
    by_shard: Counter = field(default_factory=Counter)
    distances: dict[str, Counter] = field(default_factory=dict)
    listed: list[dict] = field(default_factory=list)


def write_html_report(out_dir: str | Path, show_urls: bool = False, manifest: dict | None = None) -> Path:
    """Write out_dir/report.html (0600, atomically) from the reports beside it (manifest: manifest.json's)."""
    out = Path(out_dir)
    page = render_report(out, show_urls, manifest)
    with atomic_open(out / REPORT_NAME) as handle:
        handle.write(page.encode("utf-8"))
    return out / REPORT_NAME


def render_report(out: Path, show_urls: bool = False, manifest: dict | None = None) -> str:
    """The whole page as a string; figures come from outcomes.parquet and matches.jsonl in bounded memory."""
    summary = checked_summary(out / "summary.json")
    manifest = manifest if manifest is not None else checked_manifest(out / "manifest.json")
    outcomes = outcome_figures(out / "outcomes.parquet")
    matches = match_figures(out / "matches.jsonl")
    verdicts = Verdicts.load(out)
    for record in matches.listed:
        record["verdict"] = verdicts.of_record(record)
    body = "".join(
        [
            _header(summary, manifest, show_urls),
            _tiles(outcomes, matches, summary),
            _changes_section(summary),
            _outcome_section(outcomes),
            _match_section(matches, manifest),
            _floods_section(summary),
            _link_rot_section(outcomes, summary),
            _matched_rows_section(matches, show_urls),
            _expanded_section(expanded_figures(out), show_urls),
            _lists_section(manifest),
            _provenance_section(manifest),
        ]
    )
    return _page(page_title(summary, manifest), body)


def outcome_figures(path: Path) -> OutcomeFigures:
    """Group outcomes.parquet batch by batch with pyarrow, so millions of rows never become Python objects."""
    figures = OutcomeFigures()
    try:
        with open_regular(path) as handle:  # a FIFO there would hang pyarrow's own open
            batches = pq.ParquetFile(handle).iter_batches(
                BATCH_ROWS, columns=["shard", "outcome", "http_status", "reason", "fetched_at"]
            )
            for batch in batches:
                _add_batch(figures, pa.Table.from_batches([batch]))
    except NotRegularFileError as exc:
        raise InputError(str(path), exc.strerror) from exc
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(path), f"cannot read outcomes ({exc})") from exc
    return figures


def _add_batch(figures: OutcomeFigures, table: pa.Table) -> None:
    figures.rows += table.num_rows
    for group in _counts(table, ["shard", "outcome"]):
        figures.by_shard.setdefault(group["shard"], Counter())[group["outcome"]] += group["count_all"]
        figures.outcomes[group["outcome"]] += group["count_all"]
    classes = table.append_column("class", pc.divide(table["http_status"], 100))
    for group in _counts(classes, ["class"]):
        figures.status_classes[f"{group['class']}xx" if group["class"] else "none"] += group["count_all"]
    for group in _counts(table, ["outcome", "reason"]):
        if group["reason"]:
            figures.reasons[group["reason"]] += group["count_all"]
            by_outcome = figures.reasons_by_outcome.setdefault(group["outcome"], Counter())
            by_outcome[group["reason"]] += group["count_all"]
    columns = [table[name].to_pylist() for name in ("shard", "outcome", "reason", "fetched_at")]
    for shard, *row in zip(*columns, strict=True):
        kind = liveness(*row)
        figures.liveness[kind] += 1
        figures.liveness_by_shard.setdefault(shard, Counter())[kind] += 1


def _counts(table: pa.Table, keys: list[str]) -> list[dict]:
    return table.group_by(keys).aggregate([([], "count_all")]).to_pylist()


def match_figures(path: Path) -> MatchFigures:
    """Stream matches.jsonl line by line into counters (a file of millions of matches is still bounded)."""
    figures = MatchFigures()
    for number, record in jsonl.read_lines(path):
        try:
            _add_match(figures, record)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(str(path), f"not a match record ({exc})", number) from exc
    return figures


def _add_match(figures: MatchFigures, record: dict) -> None:
    kind = str(record["hash_type"])
    figures.total += 1
    figures.by_list[str(record["list"])] += 1
    figures.by_category[str(record.get("category") or "uncategorised")] += 1
    figures.by_hash_type[kind] += 1
    figures.by_shard[str(record["shard"])] += 1
    hash_type = REGISTRY.get(kind)
    if hash_type is not None and hash_type.hamming:
        figures.distances.setdefault(kind, Counter())[_distance(record.get("distance"), hash_type.bits)] += 1
    if len(figures.listed) < LISTED_MATCHES:
        figures.listed.append(record)


def _distance(value: object, bits: int) -> int:
    """A Hamming distance as recorded, or OUT_OF_RANGE for anything no hash of that width can give (an
    edited or damaged file): charts span the valid range, never the data's."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= bits
    return value if valid else OUT_OF_RANGE


def checked_summary(path: Path) -> dict:
    """summary.json, refused unless it follows scanner/schemas/summary.schema.json (the page trusts its
    types and ranges from then on)."""
    summary = _read_json(path)
    errors = validate(summary, summary_schema())
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(
            str(path),
            f"does not follow summary.schema.json: {errors[0]}{more}; was it edited? "
            "`scanner verify DIR` checks the whole directory",
        )
    return summary


def checked_manifest(path: Path) -> dict:
    """manifest.json, refused without its map of file digests (which `scanner report` updates)."""
    manifest = _read_json(path)
    if not isinstance(manifest.get("files"), dict):
        raise InputError(str(path), "has no 'files' map of digests; is this a finished scan's directory?")
    return manifest


def _read_json(path: Path) -> dict:
    """A report directory's JSON file (summary.json, manifest.json): a regular file only, judged on the opened
    descriptor (a FIFO would hang the open, /dev/zero never ends), and at most MAX_JSON_BYTES."""
    try:
        with open_regular(path) as handle:
            body = read_capped(handle, MAX_JSON_BYTES)
    except NotRegularFileError as exc:
        raise InputError(str(path), exc.strerror) from exc
    except OSError as exc:
        raise InputError(
            str(path), f"cannot read ({exc.strerror}); is this a finished scan's directory?"
        ) from exc
    if body is None:
        raise InputError(str(path), f"larger than {MAX_JSON_BYTES >> 20} MiB; not a scan's report file")
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InputError(str(path), f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a JSON object")
    return data


# Page sections. Every value that reaches the page goes through _e (html.escape) or a number formatter.
# _e also shows each hidden character (bidi controls, zero-width and other format characters, controls:
# scanner.reports.safetext) as a visible, marked <U+XXXX> token, so a planted value reads as what it holds.
HIDDEN_MARK = '<span class="hc">{}</span>'
SVG_HIDDEN_MARK = '<tspan class="hc">{}</tspan>'  # an HTML <span> would end the <svg> element
PLAIN_MARK = "{}"  # SVG <title> holds text only


def _e(value: object, mark: str = HIDDEN_MARK) -> str:
    return safetext.reveal(
        str(value), lambda c: mark.format(escape(safetext.token(c))), lambda s: escape(s, quote=True)
    )


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(part: float, whole: float = 1.0) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def _header(summary: dict, manifest: dict, show_urls: bool) -> str:
    warning = (
        '<p class="warn">This copy lists matched URLs. Handle it like the referral files: '
        "do not open the URLs, do not forward it beyond the people who act on it.</p>"
        if show_urls
        else '<p class="note">Matched URLs are left out of this page; '
        "<code>scanner report DIR --show-urls</code> adds them.</p>"
    )
    return (
        f"<header><h1>{_e(page_title(summary, manifest))}</h1>{_safety_warning(manifest)}"
        f"<p>Finished {_e(summary.get('finished_at', '?'))} &middot; "
        f"scanner {_e(manifest.get('scanner_version', '?'))} &middot; "
        f"summary schema {_e(summary.get('schema_version', '?'))}</p>{warning}"
        "<p class=note>This page never contains image content.</p></header>"
    )


def page_title(summary: dict, manifest: dict) -> str:
    """'Rescan report: laion-part (12 inputs)': the run kind and the dataset, for the page and its tab."""
    return f"{run_kind(summary, manifest).capitalize()} report: {dataset_name(manifest)}"


def run_kind(summary: dict, manifest: dict) -> str:
    """scan, rescan or rematch, from the fields only that run writes (a rescan's `previous` and `changes`,
    a rematch's `rematched`)."""
    if "rematched" in manifest:
        return "rematch"
    if "previous" in manifest or "changes" in summary:
        return "rescan"
    return "scan"


def dataset_name(manifest: dict) -> str:
    """The input's name, or the folder the inputs share and how many there are."""
    paths = [str(i.get("path")) for i in _objects(manifest.get("inputs")) if i.get("path")]
    if not paths:
        return "no inputs named"
    names = [posixpath.basename(p.rstrip("/")) or p for p in paths]
    if len(paths) == 1:
        return names[0]
    try:
        shared = posixpath.basename(posixpath.commonpath(paths).rstrip("/"))
    except ValueError:  # absolute and relative mixed
        shared = ""
    return f"{shared}/ ({len(paths):,} inputs)" if shared else f"{names[0]} and {len(paths) - 1:,} more"


def loosened_settings(manifest: dict) -> list[tuple[str, object, str]]:
    """(setting, value, what it means) for each safety setting this run changed from its safe default."""
    found = []
    for (section, name), (default, meaning) in SAFETY_DEFAULTS.items():
        value = _setting(manifest, section, name, default)
        if _loosened(value, default):
            found.append((f"{section}.{name}", value, meaning))
    if manifest.get("allow_private_networks") is True and not any(
        f[0].endswith("private_networks") for f in found
    ):
        found.insert(
            0, ("allow_private_networks", True, SAFETY_DEFAULTS["fetch", "allow_private_networks"][1])
        )
    return found


def _setting(manifest: dict, section: str, name: str, default: object) -> object:
    """A setting of the manifest's effective config, or default where a hand-edited manifest lacks it."""
    config = manifest.get("config")
    part = config.get(section) if isinstance(config, dict) else None
    return part.get(name, default) if isinstance(part, dict) else default


def _loosened(value: object, default: object) -> bool:
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value > default
    if isinstance(default, list):
        return bool(value)
    return value != default


def _safety_warning(manifest: dict) -> str:
    found = loosened_settings(manifest)
    if not found:
        return ""
    items = "".join(
        f"<li><code>{_e(name)} = {_e(json.dumps(value, default=str))}</code>: {_e(meaning)}</li>"
        for name, value, meaning in found
    )
    return (
        '<div class="warn safety"><strong>Safety settings changed from their defaults for this run</strong>'
        f"<ul>{items}</ul></div>"
    )


def _tiles(outcomes: OutcomeFigures, matches: MatchFigures, summary: dict) -> str:
    """Rows scanned = live + dead + not requested; live rate + link rot = 100% of the requested rows."""
    counts = outcomes.liveness
    rate = summary.get("live_rate")
    tiles = [
        ("Rows scanned", _n(outcomes.rows)),
        ("Live (URL answered)", _n(counts[Liveness.LIVE])),
        ("Dead", _n(counts[Liveness.DEAD])),
        ("Not requested", _n(counts[Liveness.NOT_REQUESTED])),
        ("Live rate", NOT_MEASURED if rate is None else _pct(float(rate))),  # summary.json's
        ("Link rot", NOT_MEASURED if outcomes.link_rot is None else _pct(outcomes.link_rot)),
        ("Matched rows", _n(outcomes.outcomes[Outcome.MATCH])),
        ("Match records", _n(matches.total)),
        ("Duration", f"{float(summary.get('duration_seconds', 0)):,.1f} s"),
        ("Rows per second", f"{float(summary.get('rows_per_second', 0)):,.1f}"),
        ("Skipped shards", _n(len(summary.get("skipped_shards", {})))),
        *_changed_tiles(summary.get("changed_looks")),
    ]
    cells = "".join(
        f'<div class="tile"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for k, v in tiles
    )
    return f'<section class="tiles">{cells}</section>'


def _changed_tiles(looks: object) -> list[tuple[str, str]]:
    """Changed rows, and how many still look like the dataset's picture (summary.json `changed_looks`)."""
    if not isinstance(looks, dict):
        return []
    near, compared = int(looks.get("within_threshold", 0)), int(looks.get("compared", 0))
    shown = f"{_n(near)} of {_n(compared)}" if compared else NOT_MEASURED
    return [("Changed rows", _n(int(looks.get("rows", 0)))), ("Changed, near-identical", shown)]


def _changes_section(summary: dict) -> str:
    """A rescan's `changes`: what moved since the previous scan (changes.jsonl lists the rows)."""
    changes = summary.get("changes")
    if not isinstance(changes, dict):
        return ""
    previous = changes.get("previous") or {}
    bars = [(label, int(changes.get(name, 0))) for name, label, _ in CHANGES]
    colours = {label: COLOURS[outcome] for _, label, outcome in CHANGES}
    not_modified, liveness = (_n(int(changes.get(k, 0))) for k in ("not_modified", "liveness_only"))
    return _section(
        "Changes since the previous scan",
        f"<p>Previous scan finished {_e(previous.get('finished_at', '?'))} "
        f"(<code>{_e(previous.get('out', '?'))}</code>); "
        "<code>changes.jsonl</code> lists every changed row.</p>",
        _figure("Rows per change (a row can show several)", bar_chart(bars, summary.get("rows", 0), colours)),
        f"<p class=note>{not_modified} rows answered 304 Not Modified (stored hashes re-used, nothing "
        f"downloaded); {liveness} rows known to match were checked for liveness only.</p>",
    )


def _outcome_section(figures: OutcomeFigures) -> str:
    order = [*OUTCOMES, *sorted(set(figures.outcomes) - set(OUTCOMES))]
    outcomes = [(o, figures.outcomes[o]) for o in order]
    return _section(
        "Outcomes",
        _figure("Rows per outcome", bar_chart(outcomes, figures.rows, COLOURS)),
        _figure(
            "HTTP status class of the final response",
            bar_chart(sorted(figures.status_classes.items()), figures.rows),
        ),
        _reasons_figure(figures),
    )


def _reasons_figure(figures: OutcomeFigures) -> str:
    """Failure reasons under their outcome (dead, invalid, blocked, then any other), in its colour; each bar
    a share of all rows."""
    groups = figures.reasons_by_outcome
    order = [*FAILURE_OUTCOMES, *sorted(set(groups) - set(FAILURE_OUTCOMES))]
    parts = [
        _figure(
            f"{outcome}: {_n(figures.outcomes[outcome])} {_rows(figures.outcomes[outcome])}, by reason",
            bar_chart(_top(groups[outcome]), figures.rows, {}, fill=COLOURS.get(outcome, ACCENT)),
            _more(groups[outcome]),
        )
        for outcome in order
        if groups.get(outcome)
    ]
    return (
        '<figure class="reasons"><figcaption>Failure reasons, by outcome (share of all rows)</figcaption>'
        f"{''.join(parts) or '<p>None.</p>'}</figure>"
    )


def _match_section(figures: MatchFigures, manifest: dict) -> str:
    if not figures.total:
        return _section("Matches", "<p>No row matched any list.</p>")
    distances = []
    for kind, counts in sorted(figures.distances.items()):
        hash_type = REGISTRY[kind]
        axis = max(hash_type.histogram_bits, hash_type.threshold)
        threshold = _threshold(manifest, kind, hash_type.threshold)
        distances.append(
            _figure(
                f"Hamming distance of {kind} matches (threshold {threshold})",
                column_chart(counts, max(axis, threshold), hash_type.bits, threshold),
                _out_of_range(counts, hash_type.bits),
            )
        )
    shard_bars = [(Path(s).name, n) for s, n in _top(figures.by_shard)]
    return _section(
        "Matches",
        _figure("Match records by list", bar_chart(_top(figures.by_list), figures.total)),
        _figure("Match records by category", bar_chart(_top(figures.by_category), figures.total)),
        _figure("Match records by hash type", bar_chart(_top(figures.by_hash_type), figures.total)),
        *distances,
        _figure("Match records per shard", bar_chart(shard_bars, figures.total), _more(figures.by_shard)),
    )


def _rows(count: int) -> str:
    return "row" if count == 1 else "rows"


def _threshold(manifest: dict, kind: str, default: int) -> int:
    """The run's match threshold for a Hamming type (its config's `<type>_threshold`), else the type's."""
    value = _setting(manifest, "match", f"{kind}_threshold", default)  # the config's [match] section
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _out_of_range(counts: Counter, bits: int) -> str:
    bad = counts.get(OUT_OF_RANGE, 0)
    return (
        f"<p class=warn>{_n(bad)} match records give a distance outside 0..{bits}, which no hash of "
        "this type can have: matches.jsonl was edited or damaged (not charted).</p>"
        if bad
        else ""
    )


def _link_rot_section(figures: OutcomeFigures, summary: dict) -> str:
    if figures.link_rot is None:
        return _section(
            "Link rot: not measured", "<p>No URL was requested (--no-fetch, or local images).</p>"
        )
    shares = {shard: _rot(counts) for shard, counts in figures.liveness_by_shard.items()}
    rot = Counter({shard: share for shard, share in shares.items() if share is not None})
    bars = [(Path(str(shard)).name, share) for shard, share in _top(rot)]
    points = _rot_over_time(figures, summary)
    trend = (
        _figure("Link rot across scans of these inputs", line_chart(points))
        if len(points) > 1
        else "<p>One scan so far; rescans of the same inputs add a trend here.</p>"
    )
    return _section(
        f"Link rot: {_pct(figures.link_rot)} of requested URLs are dead",
        _figure(
            "Share of requested URLs that are dead, per shard, highest first",
            bar_chart(bars, 1, counts=False),
            _more(rot),
        ),
        trend,
    )


def _rot_over_time(figures: OutcomeFigures, summary: dict) -> list[tuple[str, float]]:
    """(finished_at, link rot) of each earlier scan in summary["history"] that measured it, then of this one
    (1 - live_rate; an older entry without liveness counts: its dead share of rows, as it was reported)."""
    points = [(str(h["finished_at"]), _history_rot(h)) for h in summary.get("history", [])]
    points.append((str(summary.get("finished_at", "now")), figures.link_rot))
    return [(when, rot) for when, rot in points if rot is not None]


def _history_rot(entry: dict) -> float | None:
    if "liveness" in entry:
        return _rot(Counter(entry["liveness"]))
    return entry["outcomes"].get(Outcome.DEAD, 0) / entry["rows"] if entry["rows"] else 0.0


def _matched_rows_section(figures: MatchFigures, show_urls: bool) -> str:
    if not figures.total:
        return ""
    columns = ["shard", "row", "key", "list", "entry_id", "category", "hash_type", "distance", "verdict"]
    columns += ["entry"] if any(isinstance(r.get("entry"), dict) for r in figures.listed) else []
    columns += ["url"] if show_urls else []
    rows = [[_cell(record, c) for c in columns] for record in figures.listed]
    shown = (
        f"the first {len(figures.listed)} of {_n(figures.total)}"
        if figures.total > len(figures.listed)
        else "all"
    )
    return _section(
        "Matched rows",
        f"<p>Showing {shown} match records; <code>scanner export DIR</code> writes them all "
        "with their evidence.</p>",
        _table(columns, rows),
    )


def _floods_section(summary: dict) -> str:
    """Entries that matched far too many rows: likely bad list entries (summary.json `floods`)."""
    floods = _objects(summary.get("floods"))
    if not floods:
        return ""
    rows = [
        [f.get("list"), f.get("entry_id"), f.get("rows"), "yes" if f.get("hold") else "no"] for f in floods
    ]
    return _section(
        "Likely bad list entries (floods)",
        "<p>These entries matched more rows than the [review] settings allow: check them with the list's "
        "owner before trusting their matches. Held: their rows are outcome held (--hold-floods), in "
        "held.jsonl.</p>",
        _table(["list", "entry_id", "rows matched", Outcome.HELD], rows, numeric_from=2),
    )


def _expanded_section(figures: ExpandedFigures | None, show_urls: bool) -> str:
    """The candidates of `scanner expand` (expanded.jsonl), when it ran: near a seed, never matches."""
    if figures is None:
        return ""
    columns = ["shard", "row", "key", "hash_type", "distance", "threshold", "seed_shard", "seed_row"]
    columns += ["url"] if show_urls else []
    rows = [[_cell(record, c) for c in columns] for record in figures.listed]
    kinds = ", ".join(f"{_e(name)} {_n(count)}" for name, count in sorted(figures.by_hash_type.items()))
    return _section(
        "Expanded",
        f"<p>{_n(figures.rows)} candidate rows lie near {_n(len(figures.seeds))} seed rows by a stored "
        f"hash ({kinds or 'none'}). They are candidates for review, not matches: no list names them. "
        f"Showing {_n(len(figures.listed))} of {_n(figures.records)} records of expanded.jsonl.</p>",
        _table(columns, rows) if rows else "",
    )


def _cell(record: dict, column: str) -> object:
    value = record.get(column)
    if column == "entry":  # the list's own columns of the matched entry: name=value; ...
        return "; ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    return Path(str(value)).name if column in ("shard", "seed_shard") and value else value


def _lists_section(manifest: dict) -> str:
    lists = _objects(manifest.get("lists"))
    if not lists:
        return _section("Hash lists", "<p>The manifest names no list.</p>")
    return _section(
        "Hash lists",
        _figure("Entries per list and hash type", list_counts_table(lists)),
        _records_table(
            [{k: v for k, v in hl.items() if k not in ("counts", "skipped")} for hl in lists], LIST_COLUMNS
        ),
        _skipped_entries(lists),
    )


def _skipped_entries(lists: list[dict]) -> str:
    """A line per list and hash type whose entries were left out, and why (manifest lists[].skipped)."""
    lines = [
        f"{hl.get('name')}: {info.get('entries')} {type_name} entries skipped ({info.get('why')})"
        for hl in lists
        if isinstance(hl.get("skipped"), dict)
        for type_name, info in hl["skipped"].items()
        if isinstance(info, dict)
    ]
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f"<p>List entries of hash types this scan cannot match, left out:</p><ul>{items}</ul>"


def list_counts_table(lists: list[dict]) -> str:
    """A row per list, a column per hash type it holds (registry order), and the list's total."""
    counts = [hl.get("counts") if isinstance(hl.get("counts"), dict) else {} for hl in lists]
    present = {str(k) for c in counts for k in c}
    kinds = [k for k in REGISTRY if k in present] + sorted(present - set(REGISTRY))
    rows = []
    for hl, held in zip(lists, counts, strict=True):
        numbers = [held.get(k) for k in kinds]
        total = sum(n for n in numbers if isinstance(n, int) and not isinstance(n, bool))
        rows.append([hl.get("name"), *(_n(n) if isinstance(n, int) else n for n in numbers), _n(total)])
    return _table(["list", *kinds, "total"], rows, numeric_from=1)


def _provenance_section(manifest: dict) -> str:
    config = json.dumps(manifest.get("config", {}), indent=2, sort_keys=True, default=str)
    return _section(
        "Scanner and configuration",
        f"<p>scanner {_e(manifest.get('scanner_version', '?'))}; "
        f"{_count(manifest.get('units'))} work units; "
        f"command: <code>{_e(_command(manifest.get('command')))}</code></p>",
        _records_table(_objects(manifest.get("inputs")), INPUT_COLUMNS),
        f"<p class=note>{_e(SIGNATURE_NOTE)}</p>",
        f"<details open><summary>Effective configuration</summary><pre>{_pre(config)}</pre></details>",
    )


def _pre(text: str) -> str:
    """Preformatted text: its line breaks kept, everything else as _e shows it."""
    return "\n".join(_e(line) for line in text.split("\n"))


def _objects(value: object) -> list[dict]:
    """A manifest's list of records, keeping only the records (a hand-edited manifest may hold anything)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _count(value: object) -> str:
    return _n(value) if isinstance(value, int) and not isinstance(value, bool) else _e(value or 0)


def _records_table(records: list[dict], first: tuple[str, ...]) -> str:
    """A table of manifest records whatever fields they carry: the known ones first, then the rest by name."""
    present = {str(k) for record in records for k in record}
    columns = [c for c in first if c in present] + sorted(present - set(first))
    return _table(columns, [[record.get(c) for c in columns] for record in records])


def _table(columns: list[str], rows: list[list[object]], numeric_from: int | None = None) -> str:
    """numeric_from: the first column of numbers (right-aligned), if any."""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td{_num(i, numeric_from)}>{_e(_plain(c))}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _num(column: int, numeric_from: int | None) -> str:
    return " class=num" if numeric_from is not None and column >= numeric_from else ""


def _command(argv: object) -> str:
    return shlex.join(str(a) for a in argv) if isinstance(argv, list) else _plain(argv)


def _plain(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return "" if value is None else str(value)


def _top(counts: Counter) -> list[tuple[str, float]]:
    return sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:TOP_BARS]


def _more(counts: Counter) -> str:
    hidden = len(counts) - TOP_BARS
    return f"<p class=note>{_n(hidden)} more not shown.</p>" if hidden > 0 else ""


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _figure(caption: str, chart: str, after: str = "") -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{chart}{after}</figure>"


# Charts: plain SVG with text labels, readable without colour and without any script.


def bar_chart(
    items: list[tuple[str, float]],
    whole: float,
    colours: dict[str, str] | None = None,
    counts: bool = True,
    fill: str = ACCENT,
) -> str:
    """Horizontal bars, each as long as its share of whole (a full bar is 100%, whatever the largest item),
    on a faint track of the whole, under its label and the count (unless counts is False) and share. Narrow
    enough for a phone (340 px, drawn at full size: its text stays 12 px)."""
    if not items:
        return "<p>None.</p>"
    bar_w, row_h = BAR_CHART_WIDTH, 34
    rows = []
    for i, (label, value) in enumerate(items):
        y = i * row_h
        share = min(max(value / whole, 0.0), 1.0) if whole else 0.0
        width = max(share * bar_w, 1 if value else 0)
        colour = (colours or {}).get(label, fill)
        short = label if len(str(label)) <= 32 else str(label)[:31] + "…"
        rows.append(
            f'<text x="0" y="{y + 13}">{_e(short, SVG_HIDDEN_MARK)}'
            f"<title>{_e(label, PLAIN_MARK)}</title></text>"
            f'<rect x="0" y="{y + 17}" width="{bar_w}" height="12" fill="{TRACK}"/>'
            f'<rect x="0" y="{y + 17}" width="{width:.1f}" height="12" fill="{colour}"/>'
            f'<text x="{bar_w}" y="{y + 13}" text-anchor="end">{_value(value, whole, counts)}</text>'
        )
    return _svg(bar_w, len(items) * row_h + 2, "".join(rows))


BAR_CHART_WIDTH = 340  # fits a 390 px phone's page, less its margins


def _value(value: float, whole: float, counts: bool) -> str:
    return f"{_n(int(value))} ({_pct(value, whole)})" if counts else _pct(value, whole)


def column_chart(
    counts: dict[int, int], span: int = 0, limit: int = 256, threshold: int | None = None
) -> str:
    """A histogram of small integers: a column per value from 0 to the largest (or span), never past limit
    (values outside 0..limit are left out; the caller says how many), with both axes titled and ticked, and
    a dashed line after the threshold column (matches are at or under it)."""
    valid = {x: n for x, n in counts.items() if 0 <= x <= limit}
    slots = range(min(max(*valid, span, 0), limit) + 1)
    width, height, left, bottom, top_pad = 620, 200, 56, 40, 22
    plot_h = height - bottom - top_pad
    slot_w = (width - left - 10) / len(slots)
    top = max(valid.values(), default=0) or 1
    parts = [
        _y_axis(left, top_pad, plot_h, top),
        f'<text x="12" y="{top_pad + plot_h / 2:.0f}" '
        f'transform="rotate(-90 12 {top_pad + plot_h / 2:.0f})" text-anchor="middle">match records</text>',
    ]
    every = _tick_step(len(slots))
    for x in slots:
        value = valid.get(x, 0)
        h = value / top * plot_h
        bx = left + x * slot_w
        parts.append(
            f'<rect x="{bx + 1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{max(slot_w - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{ACCENT}"><title>distance {x}: {_n(value)}</title></rect>'
        )
        if x % every == 0:
            cx = bx + slot_w / 2
            parts.append(
                f'<line x1="{cx:.1f}" y1="{top_pad + plot_h}" x2="{cx:.1f}" y2="{top_pad + plot_h + 4}" '
                f'stroke="#999"/><text x="{cx:.1f}" y="{top_pad + plot_h + 16}" '
                f'text-anchor="middle">{x}</text>'
            )
    parts.append(
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 10}" y2="{top_pad + plot_h}" stroke="#999"/>'
        f'<text x="{left + (width - left) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
        "Hamming distance (bits that differ)</text>"
    )
    if threshold is not None and threshold in slots:
        tx = left + (threshold + 1) * slot_w
        parts.append(
            f'<line class="threshold" x1="{tx:.1f}" y1="{top_pad - 6}" x2="{tx:.1f}" y2="{top_pad + plot_h}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-width="2" stroke-dasharray="5 3"/>'
            f'<text x="{tx - 4:.1f}" y="{top_pad - 10}" text-anchor="end" fill="{THRESHOLD_COLOUR}">'
            f"threshold {threshold}</text>"
        )
    return _svg(width, height, "".join(parts))


def _y_axis(left: float, top_pad: float, plot_h: float, top: int) -> str:
    """Ticks at 0, half and the top count (whole numbers only), with faint grid lines."""
    parts = [f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>']
    for value in sorted({0, top // 2, top}):
        y = top_pad + plot_h - value / top * plot_h
        parts.append(
            f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#999"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_n(value)}</text>'
        )
    return "".join(parts)


def _tick_step(slots: int) -> int:
    """A round step (1, 2, 4, 8, ...) giving at most about 16 labelled ticks."""
    step = 1
    while slots / step > 16:
        step *= 2
    return step


def line_chart(points: list[tuple[str, float]]) -> str:
    """A share (0..1) over successive scans, each point labelled with its value, and its finish date and time
    under the axis (two scans on one day stay apart)."""
    width, height, left, bottom = 640, 210, 44, 44
    step = (width - left - 80) / max(len(points) - 1, 1)
    plot_h = height - bottom - 16
    points = [(label, min(max(share, 0.0), 1.0)) for label, share in points]  # an edited history may say more
    xy = [(left + 20 + i * step, 16 + plot_h * (1 - share)) for i, (_, share) in enumerate(points)]
    parts = [
        f'<line x1="{left}" y1="{16 + plot_h}" x2="{width}" y2="{16 + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="20" text-anchor="end">100%</text>',
        f'<text x="{left - 4}" y="{16 + plot_h}" text-anchor="end">0%</text>',
        '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            ACCENT, " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        ),
    ]
    for (label, share), (x, y) in zip(points, xy, strict=True):
        day, time = _when(label)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{ACCENT}"><title>{_e(label, PLAIN_MARK)}</title>'
            f'</circle><text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{_pct(share)}</text>'
            f'<text x="{x:.1f}" y="{height - 24}" text-anchor="middle" class="small">'
            f"{_e(day, SVG_HIDDEN_MARK)}</text>"
            f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" class="small">'
            f"{_e(time, SVG_HIDDEN_MARK)}</text>"
        )
    return _svg(width, height, "".join(parts))


def _when(stamp: str) -> tuple[str, str]:
    """'2025-06-01T14:03:09.123+00:00' as ('2025-06-01', '14:03:09 +00:00'); anything else as it is."""
    day, sep, rest = stamp.partition("T")
    if not sep:
        return stamp[:24], ""
    clock, zone = rest[:8], rest[8:].lstrip(".0123456789")
    return day[:10], f"{clock} {'UTC' if zone in ('Z', '+00:00') else zone[:6]}".strip()


def _svg(width: float, height: float, content: str) -> str:
    return (
        f'<svg role="img" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">{content}</svg>'
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0 auto;
max-width:1100px;padding:24px}
h1{margin:0 0 4px}h2{border-bottom:1px solid #d8dce3;padding-bottom:4px;margin-top:32px}
.note{color:#555}.warn{background:#fdecea;border:1px solid #b3261e;padding:8px 12px}
.safety ul{margin:4px 0 0;padding-left:20px}.reasons figure{margin:8px 0 8px 12px}
.reasons figure figcaption{font-weight:500}
@media (max-width:600px){body{padding:12px}.tiles{grid-template-columns:repeat(2,1fr)}}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(122px,1fr));gap:10px;margin-top:18px}
.tile{border:1px solid #d8dce3;border-radius:6px;padding:10px 12px}.tile .v{font-size:22px;font-weight:600}
.tile .k{color:#555}figure{margin:14px 0}figcaption{font-weight:600;margin-bottom:6px}
svg{font:12px system-ui,sans-serif;fill:#1d2330}svg .small{font-size:10px}
figure{overflow-x:auto}h1,p,li,figcaption{overflow-wrap:anywhere}
.hc{font:11px ui-monospace,monospace;color:#b3261e;background:#fdecea;border:1px solid #b3261e;
border-radius:2px;padding:0 1px}svg .hc{fill:#b3261e;font-weight:700}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #d8dce3;padding:3px 6px;text-align:left;
vertical-align:top}td{overflow-wrap:anywhere}td.num{text-align:right;font-variant-numeric:tabular-nums}th{white-space:nowrap}.scroll{overflow-x:auto}pre{background:#f5f6f8;padding:10px;overflow-x:auto}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title, PLAIN_MARK)}</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
