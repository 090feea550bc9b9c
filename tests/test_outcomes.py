"""Outcomes and reasons are closed sets defined once (scanner/outcomes.py): members are plain strings on
disk, no other module spells their values, the docs and the summary schema list them, and "live" has one
definition."""

from __future__ import annotations

import ast
import json
import pickle
import re
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from loopback import LoopbackServer

from scanner import outcomes
from scanner.outcomes import (
    OUTCOMES,
    REASON_ENUMS,
    REASONS,
    REQUIRED_OUTCOMES,
    VERDICTS,
    DecodeReason,
    FetchOutcome,
    Liveness,
    Outcome,
    StrEnum,
    Verdict,
    http_reason,
    is_reason,
    unmatched,
)
from scanner.reports.records import RowResult, outcomes_table
from scanner.reports.writer import Tally, summary

ALL_ENUMS = (Outcome, FetchOutcome, Verdict, *REASON_ENUMS)
SCHEMA = json.loads((REPO / "scanner" / "schemas" / "summary.schema.json").read_text(encoding="utf-8"))

# String constants in scanner/ equal to an enum value that mean something else there, with how many times
# each file may spell them: a new spelling of an outcome or a reason fails the test below.
OTHER_MEANINGS = {
    ("scanner/config.py", "match"): 1,  # the [match] section of the config
    ("scanner/audits/rescan.py", "match"): 2,  # the same section, in the stored effective config
    ("scanner/audits/clean.py", "clean"): 1,  # the command's name, for the report-directory lock
    ("scanner/cli/audit.py", "clean"): 1,  # the command's name
    ("scanner/hashing/decode.py", "decode_timeout"): 1,  # the setting hashing.decode_timeout
    ("scanner/reports/html.py", "decode_timeout"): 1,  # the same setting, warned of when raised
    ("scanner/reports/html.py", "match"): 1,  # the [match] section, in the stored effective config
}


class _Compat(outcomes._StrEnum):  # the class Python 3.10 gets (enum.StrEnum is 3.11+)
    FIRST = "first_value"


class _Native(StrEnum):
    FIRST = "first_value"


@pytest.mark.parametrize("enum_type", [_Compat, _Native])
def test_members_are_written_as_their_plain_value(enum_type, tmp_path) -> None:
    member = enum_type.FIRST
    assert str(member) == f"{member}" == f"{member:>11}".strip() == "%s" % member == "first_value"  # noqa: UP031
    assert json.dumps({member: [member]}) == '{"first_value": ["first_value"]}'
    pretty = json.dumps({member: member, "a": 1}, indent=2, sort_keys=True)  # the pure-Python encoder
    assert json.loads(pretty) == {"a": 1, "first_value": "first_value"} and "first_value" in pretty
    assert member == "first_value" and {"first_value": 1}[member] == 1 and hash(member) == hash("first_value")
    assert pickle.loads(pickle.dumps(member)) is member
    table = pa.table({"reason": pa.array([member, None], pa.string()), "inferred": [member, member]})
    assert table.schema.field("inferred").type == pa.string()
    pq.write_table(table, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").to_pylist()[0] == {
        "reason": "first_value",
        "inferred": "first_value",
    }


def test_enum_module_picks_the_standard_strenum_where_there_is_one() -> None:
    if sys.version_info >= (3, 11):
        import enum

        assert StrEnum is enum.StrEnum
    else:
        assert StrEnum is outcomes._StrEnum


def test_a_row_result_writes_plain_values() -> None:
    rows = [
        RowResult("s", 0, "u", None, Outcome.DEAD, 404, http_reason(404)),
        RowResult("s", 1, "u", None, Outcome.INVALID, reason=DecodeReason.NOT_AN_IMAGE),
    ]
    table = outcomes_table(rows)
    assert table.column("outcome").to_pylist() == ["dead", "invalid"]
    assert table.column("reason").to_pylist() == ["http_404", "not_an_image"]
    assert all(type(v) is str for v in table.column("reason").to_pylist())


def test_values_are_unchanged_and_unique() -> None:
    assert [o.value for o in OUTCOMES] == [
        "match",
        "clean",
        "dead",
        "invalid",
        "blocked",
        "changed",
        "unchecked",
        "held",
        "suppressed",
    ]
    assert [v.value for v in VERDICTS] == ["confirmed", "false_positive", "unreviewed"]
    assert [o.value for o in FetchOutcome] == ["ok", "dead", "invalid", "blocked"]
    values = [m.value for reasons in REASON_ENUMS for m in reasons]
    assert len(values) == len(set(values)) == len(REASONS), Counter(values).most_common(3)
    assert not REASONS & {o.value for o in (*Outcome, *FetchOutcome)}
    assert all(re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", v) for v in values)
    assert is_reason("http_404") and is_reason(http_reason(503)) and is_reason("empty_url")
    assert not is_reason("ok") and not is_reason("http_") and not is_reason("match")


def test_a_failed_fetch_gives_its_row_outcome() -> None:
    assert [f.row_outcome for f in FetchOutcome if f is not FetchOutcome.OK] == [
        Outcome.DEAD,
        Outcome.INVALID,
        Outcome.BLOCKED,
    ]
    with pytest.raises(ValueError):
        _ = FetchOutcome.OK.row_outcome


def test_unmatched_is_what_the_stored_record_says() -> None:
    assert unmatched(False, None) is unmatched(False, "not_an_image") is Outcome.UNCHECKED
    assert unmatched(True, None) is Outcome.CLEAN
    assert unmatched(True, DecodeReason.CORRUPT_IMAGE) is Outcome.INVALID


def _string_constants(path) -> list[ast.Constant]:
    """Every str constant in a module but its docstrings (module, class, function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_spells_an_outcome_or_a_reason_but_the_enum_module() -> None:
    """Every outcome and reason any module can produce is a member: the enums are the only place their
    values are written (f"http_{status}" only in outcomes.http_reason)."""
    values = {m.value for enum_type in ALL_ENUMS for m in enum_type}
    found: Counter = Counter()
    where: dict[tuple[str, str], list[int]] = {}
    for path in sorted((REPO / "scanner").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name == "scanner/outcomes.py":
            continue
        for node in _string_constants(path):
            if node.value in values or re.fullmatch(r"http_\d{3}", node.value):
                found[name, node.value] += 1
                where.setdefault((name, node.value), []).append(node.lineno)
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if 'f"http_' in code or "f'http_" in code:
                where.setdefault((name, "f-string http_"), []).append(line_number)
                found[name, "f-string http_"] += 1
    stray = {key: where[key] for key, count in found.items() if count > OTHER_MEANINGS.get(key, 0)}
    assert not stray, (
        f"outcome or reason values spelled outside scanner/outcomes.py (file, value): lines {stray}"
    )
    assert set(OTHER_MEANINGS) <= set(found), "an allowed other meaning is gone: drop it from OTHER_MEANINGS"


def test_the_summary_schema_and_the_docs_list_every_outcome_and_reason() -> None:
    outcomes_doc = SCHEMA["properties"]["outcomes"]
    assert ", ".join(OUTCOMES) in outcomes_doc["description"]
    assert outcomes_doc["required"] == list(REQUIRED_OUTCOMES)
    reasons_doc = SCHEMA["properties"]["reasons"]["description"]
    documented = set(re.findall(r"[a-z]+(?:_[a-z0-9]+)+|\b[a-z]+\b", reasons_doc))
    assert not REASONS - documented, sorted(REASONS - documented)
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"`([a-z_0-9<>]+)`", architecture))
    missing = sorted(
        v.value for v in (*Outcome, *FetchOutcome, *(m for e in REASON_ENUMS for m in e)) if v not in quoted
    )
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(f"`{o}`" in readme for o in OUTCOMES)


def test_live_has_one_definition_the_summary_schemas() -> None:
    """summary.json's live_rate is liveness live / (live + dead), rows never requested outside both; the
    progress bar, the CLI, report.html and a rescan's newly dead/newly live use the same function."""
    assert "live / (live + dead)" in SCHEMA["properties"]["live_rate"]["description"]
    assert set(SCHEMA["properties"]["liveness"]["required"]) == set(Liveness)
    tally = Tally(rows=len(OUTCOMES), outcomes=Counter(o.value for o in OUTCOMES))
    tally.liveness.update({Liveness.LIVE: 3, Liveness.DEAD: 1, Liveness.NOT_REQUESTED: 3})
    written = summary(tally, 0.0, 1.0, {})
    assert written["live_rate"] == 0.75
    assert written["liveness"] == {"live": 3, "dead": 1, "not_requested": 3}
    assert summary(Tally(rows=2), 0.0, 1.0, {})["live_rate"] is None  # nothing requested: not measured


def test_rescan_change_kinds_use_the_same_liveness() -> None:
    from scanner.audits.rescan import change_kinds

    def row(outcome: str, fetched_at: float | None = 1.0, reason: str | None = None) -> RowResult:
        return RowResult("s", 0, "u", None, outcome, reason=reason, fetched_at=fetched_at)

    assert change_kinds(row("changed"), row("dead"), False) == ["newly_dead"]
    assert change_kinds(row("dead"), row("changed"), False) == ["newly_live"]
    assert change_kinds(row("blocked"), row("dead"), False) == []
    assert change_kinds(row("clean", fetched_at=None), row("dead"), False) == []  # --no-fetch before
    assert change_kinds(row("dead"), row("invalid", reason="invalid_url"), False) == []


def test_a_304_to_a_plain_get_is_invalid_bad_response_not_ok(tmp_path) -> None:
    """A server answering 304 Not Modified to a scan's unconditional GET gives no body: the row used to be
    written with the fetch stage's own outcome `ok` (no row outcome, outside summary.json's set); it is
    `invalid` `bad_response`, as a rescan reports the same answer."""
    from scanner.config import build_config
    from scanner.runners.local import scan

    with LoopbackServer({"/a.txt": b"not an image"}) as server:
        shard = tmp_path / "urls.txt"
        shard.write_text(f"{server.url('/status/304')}\n{server.url('/a.txt')}\n", encoding="utf-8")
        lists = tmp_path / "list.txt"
        lists.write_text("hash_type,hash\nmd5," + "0" * 32 + "\n", encoding="utf-8")
        config = build_config(
            {
                "inputs": [str(shard)],
                "out": str(tmp_path / "out"),
                "hashlist": [str(lists)],
                "fetch": {"allow_private_networks": True, "max_retries": 0},
                "run": {"workers": 1},
            },
            "test",
        )
        result = scan(config)
    rows = pq.read_table(tmp_path / "out" / "outcomes.parquet").to_pylist()
    assert [(r["outcome"], r["reason"], r["http_status"]) for r in rows] == [
        ("invalid", "bad_response", 304),
        ("invalid", "not_an_image", 200),
    ]
    assert set(result.summary["outcomes"]) == set(OUTCOMES)
    written = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert list(written["outcomes"]) == sorted(OUTCOMES) and written["live_rate"] == 1.0
    assert result.summary["reasons"] == {"bad_response": 1, "not_an_image": 1}
