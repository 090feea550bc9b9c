"""Config: TOML plus flags, validated once; every example config in configs/ loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.config import DEFAULT_OUT, build_config, load_config
from scanner.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults():
    config = build_config({}, "test")
    assert config.out == DEFAULT_OUT
    assert config.match.pdq_threshold == 31 and config.match.pdq_min_quality == 50
    assert config.fetch.allow_private_networks is False
    assert config.run.on_bad_shard == "fail"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.toml")))
def test_example_configs_load(name):
    config = load_config(str(REPO / "configs" / name), {})
    assert config.fetch.allow_private_networks is False


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'out = "from-file"\n[fetch]\nmax_in_flight = 10\ntotal_timeout = 5\n'
        '[[hashlist]]\npath = "lists/a.csv"\nname = "a"\npdq_threshold = 20\n'
    )
    config = load_config(str(path), {"fetch.max_in_flight": 99, "out": None, "source.url_col": "photo"})
    assert config.out == "from-file"
    assert config.fetch.max_in_flight == 99
    assert config.fetch.total_timeout == 5.0
    assert config.source.url_col == "photo"
    assert [(h.spec, h.thresholds) for h in config.hashlists] == [("a=lists/a.csv", {"pdq": 20})]


@pytest.mark.parametrize(
    "text,message",
    [
        ("[fetch]\nmax_inflight = 3\n", "unknown setting.*fetch.max_inflight"),
        ("[fetch]\nmax_in_flight = 'many'\n", "fetch.max_in_flight must be int"),
        ("[fetch]\nallow_private_networks = 1\n", "must be true or false"),
        ("[run]\non_bad_shard = 'ignore'\n", "on_bad_shard must be one of fail, skip"),
        ("colour = 'blue'\n", "unknown setting.*colour"),
        ("[[hashlist]]\nname = 'x'\n", "needs a path"),
        ("[[hashlist]]\npath = 'x'\nweight = 3\n", r"unknown \[\[hashlist\]\] setting.*weight"),
        ("[fetch\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(str(path), {})
    assert "bad.toml" in str(caught.value)


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "none.toml"), {})
