"""Every closed set of words a scan writes about a row: its outcome, the fetch stage's own outcome, and the
reasons, by the stage that gives them. This module is the only place their values are written.

Values are what the reports hold (outcomes.parquet `outcome` and `reason`, summary.json `outcomes` and
`reasons`, scanner/schemas/summary.schema.json) and never change. Members are `str`s whose str(), format()
and JSON are the plain value, so pyarrow, json and f-strings write them as before; outcomes and reasons read
back from a report are plain strings that compare equal to the members.

The one reason that is not a member is a fetch's HTTP error, `http_<status>` (`http_reason`).
"""

from __future__ import annotations

import enum
import re


class _StrEnum(str, enum.Enum):
    """enum.StrEnum for Python 3.10: a member is its value as a str (str(), format(), json, pyarrow)."""

    __str__ = str.__str__
    __format__ = str.__format__


StrEnum = getattr(enum, "StrEnum", _StrEnum)  # Python 3.11+ has it; 3.10 (requires-python) does not


class Outcome(StrEnum):
    """What happened to one input row: exactly one per row (outcomes.parquet `outcome`), in report order."""

    MATCH = "match"  # at least one list entry matched
    CLEAN = "clean"  # fetched, hashed, nothing matched (with --no-fetch: something checked, nothing matched)
    DEAD = "dead"  # no successful response
    INVALID = "invalid"  # no URL, or a response (or local member) that is not a usable image
    BLOCKED = "blocked"  # refused by policy before any connection
    CHANGED = "changed"  # the bytes differ from the content hash the dataset (or the stored record) gives
    UNCHECKED = "unchecked"  # nothing could be checked without fetching (--no-fetch, rematch)
    HELD = "held"  # every entry it matched is a flood (--hold-floods): kept for review in held.jsonl
    SUPPRESSED = "suppressed"  # it matched a list and a negative entry too: kept in suppressed.jsonl


OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
"""Every outcome in report order (summary.json `outcomes`, report.html, `clean --drop`)."""

REQUIRED_OUTCOMES: tuple[Outcome, ...] = (
    Outcome.MATCH,
    Outcome.CLEAN,
    Outcome.DEAD,
    Outcome.INVALID,
    Outcome.BLOCKED,
)
"""The outcomes every summary.json has (the schema requires them of older files too)."""

MATCHED: frozenset[Outcome] = frozenset({Outcome.MATCH, Outcome.HELD, Outcome.SUPPRESSED})
"""Outcomes of rows some list entry matched (held and suppressed rows are matches set aside for review)."""

CONTENT: frozenset[Outcome] = frozenset(
    {Outcome.MATCH, Outcome.CLEAN, Outcome.INVALID, Outcome.CHANGED, Outcome.HELD, Outcome.SUPPRESSED}
)
"""Outcomes a row's content (fetched or local) may stand behind: a rematch matches the stored hashes of such
a row, a rescan carries its known matches. Not the live rate: that is `liveness`."""


class Liveness(StrEnum):
    """Whether a row's URL answered (summary.json `liveness`): every row is exactly one of these."""

    LIVE = "live"  # requested, and a response came back (an image or not)
    DEAD = "dead"  # requested, and no successful response (outcome dead)
    NOT_REQUESTED = "not_requested"  # never requested: blocked, unchecked, screened, no usable URL, local


LIVENESS: tuple[Liveness, ...] = tuple(Liveness)


def liveness(outcome: str, reason: str | None, fetched_at: object) -> Liveness:
    """The one definition of live, from a row of outcomes.parquet: summary.json `liveness` and `live_rate`,
    the CLI summary, report.html, the progress bar and a rescan's newly dead and newly live all use it.
    A row was requested when the fetch stage stamped it (`fetched_at`) and did not refuse it before any
    connection (blocked, screened, no usable URL); local bodies and --no-fetch rows carry no stamp."""
    if outcome == Outcome.DEAD:
        return Liveness.DEAD
    if outcome in _NEVER_REQUESTED or reason in _REFUSED_BEFORE_REQUEST or fetched_at is None:
        return Liveness.NOT_REQUESTED
    return Liveness.LIVE


def live_rate(live: int, dead: int) -> float | None:
    """Live rows / requested rows (live + dead), rounded for summary.json; None when nothing was requested
    (--no-fetch, local images): the rate was not measured."""
    return round(live / (live + dead), 6) if live + dead else None


def unmatched(hashed: bool, reason: str | None) -> Outcome:
    """A row that matched before and matches no more (rematch, a rescan's liveness check), told from what
    its stored record holds: hashes of an image (clean), a body that was no usable image (invalid, its
    reason kept), or nothing that could be checked without fetching (unchecked)."""
    if not hashed:
        return Outcome.UNCHECKED
    return Outcome.INVALID if reason else Outcome.CLEAN


class Verdict(StrEnum):
    """A reviewer's word on a matched row (verdicts.jsonl); a match without one is unreviewed."""

    CONFIRMED = "confirmed"
    FALSE_POSITIVE = "false_positive"
    UNREVIEWED = "unreviewed"  # recorded to take back an earlier verdict


VERDICTS: tuple[Verdict, ...] = tuple(Verdict)


class FetchOutcome(StrEnum):
    """What fetching one URL gave (FetchResult.outcome): a different set from the row's Outcome."""

    OK = "ok"  # a 2xx, or a 304 to a conditional request
    DEAD = "dead"
    INVALID = "invalid"
    BLOCKED = "blocked"

    @property
    def row_outcome(self) -> Outcome:
        """The row outcome a failed fetch gives (dead, invalid, blocked); ok has none (the body decides)."""
        if self is FetchOutcome.OK:
            raise ValueError("a fetch that succeeded gives no row outcome of its own")
        return Outcome(self.value)


class FetchReason(StrEnum):
    """Why a fetch failed (FetchResult.reason), beside `http_<status>` (http_reason)."""

    # dead: no successful response
    TIMEOUT = "timeout"  # the total per-URL deadline
    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_FAILED = "connection_failed"
    CONNECTION_RESET = "connection_reset"
    TLS_ERROR = "tls_error"
    DNS_FAILURE = "dns_failure"
    DNS_TIMEOUT = "dns_timeout"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    REDIRECT_LOOP = "redirect_loop"
    INVALID_REDIRECT = "invalid_redirect"
    CLIENT_ERROR = "client_error"  # a bug in the client, logged
    # invalid: no URL, or a response that is not usable
    EMPTY_URL = "empty_url"
    INVALID_URL = "invalid_url"
    URL_TOO_LONG = "url_too_long"
    TRUNCATED_BODY = "truncated_body"
    BODY_TOO_LARGE = "body_too_large"
    DECOMPRESSION_BOMB = "decompression_bomb"
    BAD_CONTENT_ENCODING = "bad_content_encoding"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    HEADERS_TOO_LARGE = "headers_too_large"
    BAD_RESPONSE = "bad_response"  # also a rescan's 304 to a request that was not conditional
    # blocked: refused before any connection
    BLOCKED_SCHEME = "blocked_scheme"
    BLOCKED_PRIVATE_ADDRESS = "blocked_private_address"
    SCREENED_URL = "screened_url"  # the screen's reason: a listed URL (first or redirect) is never requested


class DecodeReason(StrEnum):
    """Why a body is no usable image (hashing.DecodeError.reason); the row is `invalid`."""

    NOT_AN_IMAGE = "not_an_image"  # no image magic: HTML, JSON, empty
    UNSUPPORTED_FORMAT = "unsupported_format"  # recognised, not decodable here (HEIF)
    CORRUPT_IMAGE = "corrupt_image"
    TRUNCATED_IMAGE = "truncated_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_MANY_FRAMES = "too_many_frames"
    TOO_MANY_SCANS = "too_many_scans"  # a JPEG with more start-of-scan markers than max_scans


class HashingReason(StrEnum):
    """Why a body's hashing process died (told by the worker pool), or a plug-in failed on it; the row is
    `invalid`, digests kept."""

    HASHING_CRASHED = "hashing_crashed"  # it killed a fresh worker, alone
    DECODE_TIMEOUT = "decode_timeout"  # the kernel killed the worker past the decode CPU budget (SIGXCPU)
    # A signal-type plug-in (scanner/plugins.py) raised, or gave no valid signal string: the row keeps the
    # built-in hashes and is invalid with this reason; the scan goes on.
    PLUGIN_FAILED = "plugin_failed"
    PLUGIN_WROTE_FILE = "plugin_wrote_file"  # a plug-in tried to write a file: refused (nostore)


class SourceReason(StrEnum):
    """Why a source row has no usable body (Row.error), or no row could be read; the row is `invalid`."""

    CORRUPT_MEMBER = "corrupt_member"  # a stretch of a tar that is not a valid header, a damaged sparse map
    TRUNCATED_TAR = "truncated_tar"
    NO_IMAGE_MEMBER = "no_image_member"
    MEMBER_TOO_LARGE = "member_too_large"
    HARD_LINK_MEMBER = "hard_link_member"
    SYMLINK_MEMBER = "symlink_member"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    NO_IMAGE_BYTES = "no_image_bytes"  # a null Parquet image cell
    UNREADABLE_FILE = "unreadable_file"  # a folder image that could not be read
    UNREADABLE_SHARD = "unreadable_shard"  # rows a corrupt shard could not give back (--on-bad-shard skip)


class ChangeReason(StrEnum):
    """How a `changed` row (bytes other than the dataset's digest) looks beside the dataset's own perceptual
    hash of it (`--match-column COLUMN=pdq|phash|dhash`): within the type's threshold, or not. A changed row
    with no perceptual hash to compare has no reason."""

    NEAR_IDENTICAL = "near_identical"  # re-encoded, resized, metadata changed: visually the same
    LOOKS_DIFFERENT = "looks_different"  # another picture at the URL


Reason = FetchReason | DecodeReason | HashingReason | SourceReason | ChangeReason
REASON_ENUMS: tuple[type[StrEnum], ...] = (
    FetchReason,
    DecodeReason,
    HashingReason,
    SourceReason,
    ChangeReason,
)
REASONS: frozenset[str] = frozenset(member.value for reasons in REASON_ENUMS for member in reasons)
"""Every reason value but `http_<status>`: no two reason enums share one."""
_HTTP_REASON = re.compile(r"http_[0-9]{3}")


def http_reason(status: int) -> str:
    """A fetch's reason for an HTTP error status: `http_<status>` (dead)."""
    return f"http_{status}"


def is_reason(text: str) -> bool:
    """Whether text is a reason a scan can write: a member of a reason enum, or `http_<status>`."""
    return text in REASONS or _HTTP_REASON.fullmatch(text) is not None


_NEVER_REQUESTED = frozenset({Outcome.BLOCKED, Outcome.UNCHECKED})
_REFUSED_BEFORE_REQUEST = frozenset(
    {
        FetchReason.EMPTY_URL,
        FetchReason.INVALID_URL,
        FetchReason.URL_TOO_LONG,
        FetchReason.BLOCKED_SCHEME,
        FetchReason.BLOCKED_PRIVATE_ADDRESS,
        FetchReason.SCREENED_URL,
        *SourceReason,
    }
)


class SeedSource(StrEnum):
    """Which rows `scanner expand --from` takes as seeds: the rows confirmed by review, or every match."""

    CONFIRMED = Verdict.CONFIRMED.value
    MATCH = Outcome.MATCH.value


class FailOn(StrEnum):
    """What `--fail-on` turns into exit status ExitCode.FOUND (scan, rematch, rescan)."""

    NEW_MATCH = "new-match"  # a row matches that did not in the previous run (new, or back after gone)
    MATCH = Outcome.MATCH.value  # any row matches
    CHANGED = Outcome.CHANGED.value  # any row's bytes differ from the dataset's digest or the stored record
    NONE = "none"  # never: the exit status says only whether the run finished
