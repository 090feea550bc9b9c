"""Client exceptions to (FetchOutcome, FetchReason): one ordered table per client, one walk shared by both.

Each transport declares an `ExceptionTable` (`client.AIOHTTP_ERRORS`, `httpx_client.HTTPX_ERRORS`), the way
httpx maps httpcore's exceptions with `HTTPCORE_EXC_MAP`: entries in order, most specific first, each the
exception type(s) the client raises and what that means, one of

* a `FetchReason`;
* `ByErrno(errnos, default, chain=True)`: the reason `errnos` gives for the first errno it names in the
  exception chain (the exception and what it was raised from, through the client's wrapping; with
  `chain=False` the exception's own errno only), else `default`;
  `ERRNO_REASONS` is the errno table, `REFUSED_ERRNOS` and `RESET_ERRNOS` its two halves;
* `ByCause(rules, default)`: the reason of the first exception in the chain that a rule's type matches
  (and whose message holds the rule's words), else `default`: what the client wrapped decides;
* `ByMessage(rules, default)`: the first rule whose words all appear in the exception's own message, else
  `default` (for the protocol errors a client tells apart only by their text).

A `default` of None lets the walk go on to the next entry. `translate` is the walk: a `FetchFailure` anywhere
in the chain (the guard refused, inside the client) wins; then the first entry the exception is an instance
of that gives a reason; else `client_error` (a bug, logged). The outcome follows from the reason
(`outcome_of`: invalid for an unusable URL or response, else dead), and only a reset is retried.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass

from scanner.fetch.base import FetchFailure, exception_chain, failure_in_chain
from scanner.outcomes import FetchOutcome, FetchReason

ERRNO_REASONS: Mapping[int, FetchReason] = {
    errno.ECONNREFUSED: FetchReason.CONNECTION_REFUSED,
    errno.ECONNRESET: FetchReason.CONNECTION_RESET,
    errno.EPIPE: FetchReason.CONNECTION_RESET,
    errno.ECONNABORTED: FetchReason.CONNECTION_RESET,
}
"""The errno-based cases: what an OS error number in a client's exception chain says."""

REFUSED_ERRNOS = {n: r for n, r in ERRNO_REASONS.items() if r is FetchReason.CONNECTION_REFUSED}
RESET_ERRNOS = {n: r for n, r in ERRNO_REASONS.items() if r is FetchReason.CONNECTION_RESET}

INVALID_REASONS = frozenset(
    {
        FetchReason.INVALID_URL,
        FetchReason.TRUNCATED_BODY,
        FetchReason.HEADERS_TOO_LARGE,
        FetchReason.BAD_RESPONSE,
    }
)
"""Client-error reasons whose outcome is `invalid` (the URL or response is unusable); the rest are `dead`."""

RETRYABLE_REASONS = frozenset({FetchReason.CONNECTION_RESET})

Chain = tuple[BaseException, ...]
Types = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class ByErrno:
    """The reason `errnos` gives for the first errno it names in the chain (with `chain=False`, the
    exception's own errno only), else `default`."""

    errnos: Mapping[int, FetchReason]
    default: FetchReason | None = None
    chain: bool = True

    def reason(self, chain: Chain) -> FetchReason | None:
        for cause in chain if self.chain else chain[:1]:
            number = cause.errno if isinstance(cause, OSError) else None
            if number in self.errnos:
                return self.errnos[number]
        return self.default

    def reasons(self) -> frozenset[FetchReason]:
        return _with_default(frozenset(self.errnos.values()), self.default)


@dataclass(frozen=True, slots=True)
class ByCause:
    """The reason of the first exception in the chain that a rule's types match and whose message (lower
    case) holds all the rule's words, else `default`."""

    rules: tuple[tuple[Types, tuple[str, ...], FetchReason], ...]
    default: FetchReason | None = None

    def reason(self, chain: Chain) -> FetchReason | None:
        for cause in chain:
            for types, words, reason in self.rules:
                if isinstance(cause, types) and _holds(cause, words):
                    return reason
        return self.default

    def reasons(self) -> frozenset[FetchReason]:
        return _with_default(frozenset(reason for *_, reason in self.rules), self.default)


@dataclass(frozen=True, slots=True)
class ByMessage:
    """The reason of the first rule whose words all appear in the exception's own message (lower case), else
    `default`."""

    rules: tuple[tuple[tuple[str, ...], FetchReason], ...]
    default: FetchReason | None = None

    def reason(self, chain: Chain) -> FetchReason | None:
        return next((reason for words, reason in self.rules if _holds(chain[0], words)), self.default)

    def reasons(self) -> frozenset[FetchReason]:
        return _with_default(frozenset(reason for _, reason in self.rules), self.default)


Meaning = FetchReason | ByErrno | ByCause | ByMessage
ExceptionTable = tuple[tuple[Types, Meaning], ...]


def outcome_of(reason: FetchReason) -> FetchOutcome:
    """The outcome a client error's reason gives: `invalid` for an unusable URL or response, else `dead`."""
    return FetchOutcome.INVALID if reason in INVALID_REASONS else FetchOutcome.DEAD


def failure(reason: FetchReason) -> FetchFailure:
    """The FetchFailure for a reason a client error gave."""
    return FetchFailure(outcome_of(reason), reason, retryable=reason in RETRYABLE_REASONS)


def table_reasons(table: ExceptionTable) -> frozenset[FetchReason]:
    """Every reason a table can give."""
    found: set[FetchReason] = set()
    for _, meaning in table:
        found |= {meaning} if isinstance(meaning, FetchReason) else meaning.reasons()
    return frozenset(found)


def translate(exc: BaseException, table: ExceptionTable) -> FetchFailure:
    """The FetchFailure for a client's exception: the guard's own failure in its chain, else the first table
    entry the exception is an instance of that gives a reason, else `client_error`."""
    refused = failure_in_chain(exc)
    if refused is not None:
        return refused
    chain = tuple(exception_chain(exc))
    for types, meaning in table:
        if isinstance(exc, types):
            reason = meaning if isinstance(meaning, FetchReason) else meaning.reason(chain)
            if reason is not None:
                return failure(reason)
    return failure(FetchReason.CLIENT_ERROR)


def _holds(exc: BaseException, words: tuple[str, ...]) -> bool:
    message = str(exc).lower()
    return all(word in message for word in words)


def _with_default(reasons: frozenset[FetchReason], default: FetchReason | None) -> frozenset[FetchReason]:
    return reasons | {default} if default is not None else reasons
