"""The fetch stage: URLs into memory (never to disk) behind an SSRF guard, with deadlines, caps, retries."""

from scanner.fetch.base import FetchConfig, Fetcher, FetchFailure, FetchResult
from scanner.fetch.fetcher import GuardedFetcher, make_fetcher
from scanner.fetch.guard import AddressPolicy, Target, parse_url

__all__ = [
    "AddressPolicy",
    "FetchConfig",
    "FetchFailure",
    "FetchResult",
    "Fetcher",
    "GuardedFetcher",
    "Target",
    "make_fetcher",
    "parse_url",
]
