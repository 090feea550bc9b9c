"""--notify URL: one JSON event POSTed to the operator's own receiver when a scan, rematch or rescan ends.

The URL is the operator's, so the fetch stage's address guard (no private networks) does not apply: a
receiver on the same host or network is the usual case. TLS certificates are verified (system roots, or
--notify-ca for a private CA); no proxy or .netrc from the environment. Each attempt has --notify-timeout
seconds; a failed attempt (no connection, a timeout, HTTP 429 or 5xx) is retried once after a pause, never
more, and a refusal (another 4xx, a redirect) not at all. A notice that cannot be delivered is a warning:
the run finished and its reports stand, so the exit status is the run's.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import urlsplit

from scanner import __version__
from scanner.errors import ConfigError

RETRY_PAUSE = 1.0  # seconds before the one retry
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def check_notify_url(url: str) -> str:
    """An http or https URL with a host, else a ConfigError naming the flag (before the run starts)."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad IPv6 literal or port
        usable = False
    if not usable:
        raise ConfigError(f"--notify must be an http:// or https:// URL with a host, not {shown(url)!r}")
    return url


def check_ca_file(ca_file: str) -> None:
    """The --notify-ca file must give a TLS context (PEM certificates), checked before the run starts."""
    try:
        ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"--notify-ca {ca_file}: not a file of PEM certificates ({exc})") from exc


def shown(url: str) -> str:
    """The URL as a message may show it: scheme, host and port only (a path or query may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "(an unparsable URL)"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def post_event(url: str, event: dict, timeout: float, ca_file: str | None = None) -> str | None:
    """POST the event as JSON; None once the receiver answered 2xx, else why it was not delivered."""
    import httpx  # start-up cost: only a run that notifies loads it

    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    except (ssl.SSLError, OSError, ValueError) as exc:  # the file changed since the check before the run
        return f"--notify-ca {ca_file}: {exc}"
    headers = {"User-Agent": f"scanner/{__version__}"}
    with httpx.Client(timeout=timeout, verify=verify, trust_env=False, follow_redirects=False) as client:
        for attempt in (1, 2):
            try:
                response = client.post(url, json=event, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                problem, again = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True
            else:
                if 200 <= response.status_code < 300:
                    return None
                problem = f"HTTP {response.status_code}"
                again = response.status_code in RETRY_STATUSES
            if not again or attempt == 2:
                return f"{problem} (attempt {attempt} of at most 2)"
            time.sleep(RETRY_PAUSE)
    return None  # not reached: the loop returns on its second attempt
