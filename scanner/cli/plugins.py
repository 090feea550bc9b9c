"""The signal-type plug-in flags (scanner/plugins.py, docs/plugins.md), shared by scan and rematch."""

from __future__ import annotations

import argparse

PLUGIN_FLAGS: list[tuple[str, str, dict]] = [
    (
        "--signal-type",
        "plugins.signal_types",
        {
            "action": "append",
            "metavar": "MODULE:CLASS",
            "help": "a python-threatexchange SignalType that hashes bytes, as a hash type; repeatable "
            "(docs/plugins.md; default: none)",
        },
    ),
    (
        "--tx-extension",
        "plugins.tx_extensions",
        {
            "action": "append",
            "metavar": "MODULE",
            "help": "a python-threatexchange extension: the signal types its TX_MANIFEST lists; repeatable "
            "(default: none)",
        },
    ),
]


def plugin_overrides(args: argparse.Namespace) -> dict[str, list[str] | None]:
    """The plug-in flags given, as config keys (None: not given, the config file's stand)."""
    return {key: getattr(args, flag[2:].replace("-", "_")) for flag, key, _ in PLUGIN_FLAGS}
