"""Help that answers: what the tool does, every default (from the config dataclasses), where reports go, the
list formats; configs/default.toml names every setting; one exit-code rule for command lines that do not
parse; --quiet still names the reports."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO

from scanner.config import SECTIONS, ScanConfig, load_config
from scanner.exitcodes import ExitCode
from scanner.sources.base import URL_COLUMNS

DEFAULT_TOML = REPO / "configs" / "default.toml"


def test_default_toml_names_every_setting_and_loads_to_the_defaults() -> None:
    text = DEFAULT_TOML.read_text(encoding="utf-8")
    for section, cls in SECTIONS.items():
        body = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
        for spec in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{spec.name} = ", body, re.M), (
                f"{section}.{spec.name} is not in default.toml"
            )
    assert load_config(str(DEFAULT_TOML), {}) == ScanConfig()


def test_top_level_help_says_what_the_tool_does(scanner_cli) -> None:
    done = scanner_cli("--help")
    assert done.returncode == 0
    opening = done.stdout.split("\n\n")[1]
    assert "hash lists" in opening and "report" in opening and "Command line:" not in done.stdout


def test_scan_help_shows_the_config_defaults_and_where_to_look(scanner_cli) -> None:
    done = scanner_cli("scan", "--help")
    text = " ".join(done.stdout.split("options:", 1)[1].split())  # past the usage; argparse wraps lines
    defaults = ScanConfig()
    for flag, value in (
        ("--rows-per-unit ROWS_PER_UNIT", defaults.source.rows_per_unit),
        ("--max-in-flight MAX_IN_FLIGHT", defaults.fetch.max_in_flight),
        ("--per-host PER_HOST", defaults.fetch.max_per_host),
        ("--timeout TIMEOUT", defaults.fetch.total_timeout),
        ("--max-bytes MAX_BYTES", defaults.fetch.max_bytes),
        ("--out OUT", defaults.out),
    ):
        assert re.search(rf"{re.escape(flag)} [^-]*\(default: {re.escape(str(value))}\)", text), flag
    assert "hashlists/README.md" in text
    url_help = text.split("--url-col URL_COL", 1)[1].split("--key-col", 1)[0]
    assert all(column in url_help for column in URL_COLUMNS)


@pytest.mark.parametrize("command", ["scan", "rescan", "export"])
def test_an_unknown_flag_exits_2_with_the_subcommands_usage(scanner_cli, command: str) -> None:
    done = scanner_cli(command, "x", "--out", "o", "--no-such-flag")
    assert done.returncode == ExitCode.USAGE == 2
    assert done.stderr.startswith(f"usage: scanner {command} ")
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_a_bad_flag_value_exits_2_with_the_subcommands_usage(scanner_cli) -> None:
    done = scanner_cli("scan", "x", "--rows-per-unit", "many")
    assert done.returncode == 2 and done.stderr.startswith("usage: scanner scan ")


def test_mistakes_are_answered(tmp_path: Path, scanner_cli) -> None:
    shard = tmp_path / "photos.csv"
    shard.write_text("photo,caption\nhttp://example.invalid/a.jpg,a\n", encoding="utf-8")
    odd = tmp_path / "odd.lst"
    odd.write_text("this is not a hash list\n", encoding="utf-8")
    out = str(tmp_path / "out")
    no_column = scanner_cli("scan", str(shard), "--hashlist", str(odd), "--out", out, "--no-fetch")
    assert no_column.returncode == 1
    no_list = scanner_cli("scan", str(shard), "--out", out)
    assert "--hashlist" in no_list.stderr and "liveness" not in no_list.stderr
    shard.write_text("url\nhttp://example.invalid/a.jpg\n", encoding="utf-8")
    bad_list = scanner_cli("scan", str(shard), "--hashlist", str(odd), "--out", out, "--no-fetch")
    assert bad_list.returncode == 1
    accepted = "csv, ncmec-csv, threatexchange-csv, threatexchange, pdq-hashio, text, ncmec-xml"
    assert f"accepted formats: {accepted}" in bad_list.stderr
    shard.write_text("photo,caption\nhttp://example.invalid/a.jpg,a\n", encoding="utf-8")
    good = tmp_path / "list.csv"
    good.write_text("hash_type,hash\nmd5," + "0" * 32 + "\n", encoding="utf-8")
    no_column = scanner_cli("scan", str(shard), "--hashlist", str(good), "--out", out, "--no-fetch")
    assert no_column.returncode == 1 and "--url-col" in no_column.stderr, no_column.stderr


def test_quiet_still_names_the_reports(tmp_path: Path, scanner_cli) -> None:
    shard = tmp_path / "urls.txt"
    shard.write_text("http://example.invalid/a.jpg\n", encoding="utf-8")
    good = tmp_path / "list.csv"
    good.write_text("hash_type,hash\nmd5," + "0" * 32 + "\n", encoding="utf-8")
    out = tmp_path / "out"
    done = scanner_cli(
        "scan", str(shard), "--hashlist", str(good), "--out", str(out), "--no-fetch", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"reports: {out}"] and done.stderr == ""
