"""Lists python-threatexchange writes, made by the real package (the `test` extra): its CLI fetches a
local-file collaboration into a throwaway HOME and exports it with `threatexchange dataset -P --csv`; the
export loads, and matches, exactly as the same hashes in the scanner's canonical CSV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from contracts import csv_line, loaded_entries

from scanner.hashtypes import REGISTRY
from scanner.lists import Match, Matcher, Query, load_hashlist

pytest.importorskip("threatexchange", reason="python-threatexchange is the test extra: pip install .[test]")

PYTX_CATEGORY = "INVESTIGATION_SEED"  # what pytx's local-file collaborations call every signal
COLLAB = "Test Collab"
# pytx signal type -> the scanner's hash type, for what pytx and the scanner both hold
SIGNALS = {"pdq": "pdq", "video_md5": "md5", "video_sha256": "sha256", "url_md5": "url_md5"}


def pytx(home: Path, *args: str) -> str:
    """Run the real `threatexchange` CLI with its state in `home`; its stdout."""
    code = "import sys; from threatexchange.cli.main import main; sys.argv[0] = 'threatexchange'; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def hashes() -> list[tuple[str, str]]:
    """(pytx signal type, value) pairs: three of each type both sides know."""
    pairs = []
    for signal, name in SIGNALS.items():
        width = REGISTRY[name].nbytes
        pairs += [(signal, bytes((i * 37 + k) % 256 for k in range(width)).hex()) for i in range(1, 4)]
    return pairs


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`threatexchange dataset -P --csv` of a local-file collaboration holding hashes() and a raw_text
    signal (a type the scanner has no hasher for)."""
    home = tmp_path_factory.mktemp("pytx-home")
    signals = home / "signals.txt"
    lines = [f"{signal} {value}" for signal, value in hashes()]
    signals.write_text("\n".join([*lines, "raw_text some words to match"]) + "\n", encoding="utf-8")
    pytx(home, "config", "collab", "edit", "local_file", "--create", "--filename", str(signals), COLLAB)
    pytx(home, "fetch")
    path = home / "export.csv"
    path.write_text(pytx(home, "dataset", "-P", "--csv"), encoding="utf-8")
    return path


def test_the_export_has_the_documented_header(export: Path) -> None:
    assert export.read_text(encoding="utf-8").splitlines()[0] == "signal_type,signal_str,collab,category,tags"


def test_a_pytx_export_loads_as_the_same_hashes_in_canonical_csv(export: Path, tmp_path: Path) -> None:
    rows = [[SIGNALS[signal], value, PYTX_CATEGORY] for signal, value in hashes()]
    canonical = tmp_path / "canonical.csv"
    canonical.write_text("\n".join(csv_line(r) for r in [["hash_type", "hash", "category"], *rows]) + "\n")
    exported, expected = load_hashlist(str(export)), load_hashlist(str(canonical))
    assert exported.format == "threatexchange-csv"
    assert {k: sorted(v) for k, v in loaded_entries(exported).items()} == {
        k: sorted(v) for k, v in loaded_entries(expected).items()
    }
    queries = [Query({SIGNALS[signal]: bytes.fromhex(value)}) for signal, value in hashes()]
    matched = Matcher.from_lists([exported]).match_batch(queries)
    assert seen(matched) == seen(Matcher.from_lists([expected]).match_batch(queries))
    assert all(len(found) >= 1 for found in matched)


def seen(found: list[list[Match]]) -> list[list[tuple]]:
    """What a match tells, but the list's name (the two files have different ones)."""
    return [[(m.entry_id, m.category, m.hash_type, m.distance) for m in query] for query in found]


def test_signal_types_without_a_hasher_are_skipped_and_counted(export: Path) -> None:
    loaded = load_hashlist(str(export))
    assert loaded.counts == {"md5": 3, "pdq": 3, "sha256": 3, "url_md5": 3}
    assert loaded.stats["skipped"]["raw_text"]["entries"] == 1
    assert loaded.stats["skipped"]["raw_text"]["why"] == "no hasher for raw_text: install a plug-in"


def test_collab_and_tags_are_kept_as_entry_metadata(export: Path) -> None:
    entries = load_hashlist(str(export)).entries["pdq"]
    assert entries.metadata is not None
    assert entries.metadata.column_names == ["collab", "tags"]
    assert set(entries.metadata.column("collab").to_pylist()) == {COLLAB}
