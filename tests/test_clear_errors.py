"""No tracebacks, anywhere: every way a user can get a command wrong ends in one line on stderr that names
the path or setting and what to do, with its exit status; what nobody anticipated ends in one line and a
private log. Through the real command line (a fresh process each), real files, a real full file system."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from audit_support import images, run_scan, write_list, write_shard
from conftest import REPO, run_scanner
from loopback import LoopbackServer
from report_builder import build_report

from scanner.config import RANGES, SECTIONS, build_config
from scanner.errors import ConfigError
from scanner.exitcodes import ExitCode
from scanner.reports.signing import generate_keypair

OUT_COMMANDS = ("scan", "demo", "rematch", "rescan", "clean", "export", "report", "sign", "keygen")
FILE_COMMANDS = ("export", "keygen")  # they write one file (--output, --out KEY)
DIR_IN_PLACE = ("report", "sign")  # they write into a finished scan's directory
BAD_OUT_KINDS = ("wrong_kind", "under_a_file", "kernel_file_system", "read_only")


def assert_one_clear_line(
    result: subprocess.CompletedProcess, *needles: str, code: int = ExitCode.ERROR
) -> str:
    """The command failed with `code` and said so in exactly one line holding every needle; no traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small real tmpfs at path (we run as root in CI); skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A real finished scan with --keep-hashes (three served images, one listed): the input of rematch,
    rescan, clean, export and report."""
    tmp = tmp_path_factory.mktemp("finished")
    bodies = images(3, first_seed=900)
    with LoopbackServer({f"/{n}.jpg": body for n, body in enumerate(bodies)}) as server:
        shard = write_shard(tmp / "shard.parquet", {"url": [server.url(f"/{n}.jpg") for n in range(3)]})
        listed = write_list(tmp / "list.txt", [hashlib.md5(bodies[1]).hexdigest()])
        run_scan(shard, tmp / "scan", [f"md5:{listed}"], audit={"keep_hashes": True})
    key, _public, _fingerprint = generate_keypair(tmp / "signing-key")
    yield {"tmp": tmp, "shard": shard, "list": listed, "scan": tmp / "scan", "key": key}


def command(name: str, out: str, finished: dict[str, Path]) -> list[str]:
    """The command line of `name` writing to out (its --out, --output or DIR), inputs otherwise good."""
    scan, shard, listed = str(finished["scan"]), str(finished["shard"]), f"md5:{finished['list']}"
    return {
        "scan": ["scan", shard, "--hashlist", listed, "--out", out, "--quiet", "--workers", "1"],
        "demo": ["demo", "--out", out, "--quiet", "--images", "8"],
        "rematch": ["rematch", scan, "--hashlist", listed, "--out", out, "--quiet"],
        "rescan": ["rescan", scan, "--out", out, "--quiet", "--workers", "1", "--allow-private-networks"],
        "clean": ["clean", shard, "--report", scan, "--out", out],
        "export": ["export", scan, "--output", out],
        "report": ["report", out],
        "sign": ["sign", out, "--key", str(finished["key"])],
        "keygen": ["keygen", "--out", out],
    }[name]


def bad_out(kind: str, name: str, tmp: Path, finished: dict[str, Path], stack: contextlib.ExitStack) -> str:
    """A place `name` cannot write: a file where a directory goes (a directory where export's file goes),
    a path under a file, a path in /proc, a read-only file system (holding a copy of the scan for report)."""
    if kind == "wrong_kind":
        if name in FILE_COMMANDS:
            return str(tmp)
        (tmp / "a-file").write_text("not a directory\n")
        return str(tmp / "a-file")
    if kind == "under_a_file":
        (tmp / "a-file").write_text("not a directory\n")
        return str(tmp / "a-file" / ("file" if name in FILE_COMMANDS else "out"))
    if kind == "kernel_file_system":
        return f"/proc/self/scanner-{name}"
    mount = stack.enter_context(mounted_tmpfs(tmp / "ro", "4m"))
    shutil.copytree(finished["scan"], mount / "scan")
    remount(mount, "ro")
    if name in DIR_IN_PLACE:
        return str(mount / "scan")
    return str(mount / ("file" if name in FILE_COMMANDS else "out"))


@pytest.mark.parametrize("kind", BAD_OUT_KINDS)
@pytest.mark.parametrize("name", OUT_COMMANDS)
def test_every_command_refuses_an_output_it_cannot_write_in_one_line(
    name: str, kind: str, finished: dict[str, Path], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        out = bad_out(kind, name, tmp_path, finished, stack)
        before = sorted(p.name for p in tmp_path.iterdir())
        result = run_scanner(*command(name, out, finished), cwd=tmp_path, timeout=120)
        assert_one_clear_line(result, out)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created, nothing left
        if kind == "read_only" and name not in DIR_IN_PLACE:
            assert not os.path.lexists(out)


def test_a_failed_start_leaves_no_directory_it_created_and_keeps_one_it_did_not(
    finished: dict[str, Path], tmp_path: Path
) -> None:
    shard = str(finished["shard"])
    created = tmp_path / "new" / "deeper" / "out"
    result = run_scanner("scan", shard, "--hashlist", "md5:missing.txt", "--out", str(created), cwd=tmp_path)
    assert_one_clear_line(result, "missing.txt")
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    result = run_scanner("scan", shard, "--hashlist", "md5:missing.txt", "--out", str(existing), cwd=tmp_path)
    assert_one_clear_line(result, "missing.txt")
    assert existing.is_dir()
    result = run_scanner(
        "rematch", str(finished["scan"]), "--hashlist", "md5:missing.txt", "--out", "r", cwd=tmp_path
    )
    assert_one_clear_line(result, "missing.txt")
    assert not (tmp_path / "r").exists()


# Settings: every numeric setting has a range, and each side of it is refused with the name and the range.


def numeric_settings() -> list[str]:
    return [
        f"{section}.{spec.name}"
        for section, cls in SECTIONS.items()
        for spec in dataclasses.fields(cls)
        if isinstance(getattr(cls(), spec.name), (int, float))
        and not isinstance(getattr(cls(), spec.name), bool)
    ]


def test_every_numeric_setting_of_every_section_has_a_range() -> None:
    assert sorted(numeric_settings()) == sorted(RANGES)
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        assert allowed.holds(getattr(SECTIONS[section](), name)), (
            f"{key}: its default is out of its own range"
        )


def outside(key: str) -> list[float]:
    allowed = RANGES[key]
    section, name = key.split(".")
    is_float = isinstance(getattr(SECTIONS[section](), name), float)
    values = [allowed.low if allowed.open else allowed.low - 1, allowed.high + 1, -(10**12), 10**30]
    return values + ([math.nan, math.inf, -math.inf] if is_float else [])


def inside(key: str) -> list[float]:
    allowed = RANGES[key]
    section, name = key.split(".")
    is_float = isinstance(getattr(SECTIONS[section](), name), float)
    low = allowed.low + (0.001 if allowed.open else 0)
    return [float(low) if is_float else int(low), float(allowed.high) if is_float else int(allowed.high)]


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_setting_out_of_its_range_is_refused_naming_it_and_the_range(key: str) -> None:
    section, name = key.split(".")
    for value in outside(key):
        with pytest.raises(ConfigError) as refused:
            build_config({section: {name: value}}, "scan.toml")
        assert f"scan.toml: {key} must be {RANGES[key].text()}, not " in str(refused.value)
    for value in inside(key):
        assert getattr(getattr(build_config({section: {name: value}}, "scan.toml"), section), name) == value


@pytest.mark.parametrize("data", [{"inputs": [1, 2]}, {"inputs": "a.csv"}, {"out": 5}, {"out": ""}])
def test_inputs_and_out_of_the_wrong_type_are_refused_by_name(data: dict) -> None:
    with pytest.raises(ConfigError, match=f"scan.toml: {next(iter(data))} must be"):
        build_config(data, "scan.toml")


@pytest.fixture(scope="module")
def blocked_shard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A URL list the default policy blocks (nothing is fetched) and a list to match."""
    tmp = tmp_path_factory.mktemp("blocked")
    (tmp / "urls.csv").write_text("url\nhttp://127.0.0.1:9/a.jpg\n")
    (tmp / "list.txt").write_text("0" * 32 + "\n")
    return {"shard": str(tmp / "urls.csv"), "list": f"md5:{tmp / 'list.txt'}"}


FLAG_CASES = [
    ("scan", "--workers", "-1", "run.workers"),
    ("scan", "--workers", "100000", "run.workers"),
    ("scan", "--timeout", "nan", "fetch.total_timeout"),
    ("scan", "--timeout", "0", "fetch.total_timeout"),
    ("scan", "--max-bytes", "0", "fetch.max_bytes"),
    ("scan", "--max-member-bytes", "-5", "source.max_member_bytes"),
    ("scan", "--rows-per-unit", "0", "source.rows_per_unit"),
    ("scan", "--max-in-flight", "0", "fetch.max_in_flight"),
    ("scan", "--per-host", "0", "fetch.max_per_host"),
    ("scan", "--pdq-threshold", "300", "match.pdq_threshold"),
    ("scan", "--pdq-min-quality", "101", "match.pdq_min_quality"),
    ("rescan", "--workers", "-1", "run.workers"),
    ("rescan", "--timeout", "inf", "fetch.total_timeout"),
    ("rematch", "--pdq-threshold", "-1", "match.pdq_threshold"),
]


@pytest.mark.parametrize(("name", "flag", "value", "key"), FLAG_CASES)
def test_a_flag_out_of_range_is_one_line_naming_the_setting(
    name: str, flag: str, value: str, key: str, blocked_shard: dict, finished: dict, tmp_path: Path
) -> None:
    first = {
        "scan": blocked_shard["shard"],
        "rescan": str(finished["scan"]),
        "rematch": str(finished["scan"]),
    }
    lists = [] if name == "rescan" else ["--hashlist", blocked_shard["list"]]
    argv = [name, first[name], *lists, "--out", "out", "--quiet", flag, value]
    result = run_scanner(*argv, cwd=tmp_path, timeout=60)
    assert_one_clear_line(result, key, RANGES[key].text())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("images", ["0", "-5", "100000"])
def test_a_demo_of_too_few_or_too_many_images_is_one_line(images: str, tmp_path: Path) -> None:
    result = run_scanner("demo", "--images", images, "--out", "demo", "--quiet", cwd=tmp_path, timeout=60)
    assert_one_clear_line(result, "--images must be from 1 to 10,000")
    assert not (tmp_path / "demo").exists()


TOML_CASES = [
    ("[run]\nworkers = -1\n", "run.workers"),
    ("[fetch]\ntotal_timeout = nan\n", "fetch.total_timeout"),
    ("[fetch]\nconnect_timeout = inf\n", "fetch.connect_timeout"),
    ("[source]\nrows_per_unit = 0\n", "source.rows_per_unit"),
    ('[[hashlist]]\npath = "list.txt"\npdq_threshold = "abc"\n', "pdq_threshold"),
    ('[[hashlist]]\npath = "list.txt"\npdq_threshold = 2.5\n', "pdq_threshold"),
    ("[fetch]\nallowed_networks = [5]\n", "fetch.allowed_networks must be a list of strings"),
    ("[source]\nextra_cols = [1, 2]\n", "source.extra_cols must be a list of strings"),
    ('[audit]\nmatch_columns = "sha256=sha256"\n', "audit.match_columns must be a list of strings"),
]


@pytest.mark.parametrize(("text", "key"), TOML_CASES)
def test_a_config_file_value_out_of_range_is_one_line_naming_the_file_and_setting(
    text: str, key: str, blocked_shard: dict, tmp_path: Path
) -> None:
    (tmp_path / "scan.toml").write_text(text)
    lists = [] if "[[hashlist]]" in text else ["--hashlist", blocked_shard["list"]]  # a flag replaces them
    argv = ["scan", blocked_shard["shard"], *lists, "--config", "scan.toml"]
    result = run_scanner(*argv, "--out", "out", "--quiet", cwd=tmp_path, timeout=60)
    assert_one_clear_line(result, "scan.toml", key)
    assert not (tmp_path / "out").exists()


# A full disk: a real, small tmpfs, filled by the scan itself; the same command finishes once there is room.


def test_a_full_disk_names_the_file_and_the_same_command_resumes(tmp_path: Path) -> None:
    urls = "".join(f"http://127.0.0.1:9/img/{i:06d}-padding-padding-padding.jpg\n" for i in range(20_000))
    (tmp_path / "urls.csv").write_text("url\n" + urls)
    (tmp_path / "list.txt").write_text("0" * 32 + "\n")
    with mounted_tmpfs(tmp_path / "disk", "128k") as disk:
        argv = ["scan", "urls.csv", "--hashlist", "md5:list.txt", "--out", str(disk / "out"), "--quiet"]
        argv += ["--workers", "1", "--rows-per-unit", "5000"]
        full = run_scanner(*argv, cwd=tmp_path)
        line = assert_one_clear_line(full, "No space left on device", "run the same command again")
        assert f"cannot write {disk / 'out'}/" in line
        remount(disk, "size=32m")
        resumed = run_scanner(*argv, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads((disk / "out" / "summary.json").read_text())["rows"] == 20_000


# scanner report on edited or damaged reports: a clear error for a summary off its schema, and charts that
# span the valid range whatever a match record claims.


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_matches(path: Path, change: Callable[[dict], None]) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        change(record)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


SUMMARY_CASES = {
    "live_rate_not_a_number": (lambda s: s.update(live_rate="high"), "live_rate"),
    "live_rate_missing": (lambda s: s.pop("live_rate"), "live_rate"),
    "rows_a_string": (lambda s: s.update(rows="12"), "rows"),
    "outcomes_a_list": (lambda s: s.update(outcomes=[1, 2]), "outcomes"),
    "duration_negative": (lambda s: s.update(duration_seconds=-1), "duration_seconds"),
}


@pytest.mark.parametrize("case", sorted(SUMMARY_CASES))
def test_report_on_a_summary_off_its_schema_is_one_clear_line(case: str, tmp_path: Path) -> None:
    built = build_report(tmp_path)
    change, key = SUMMARY_CASES[case]
    edit_json(built.out / "summary.json", change)
    result = run_scanner("report", str(built.out), timeout=60)
    assert_one_clear_line(result, "summary.json", "summary.schema.json", key)


def set_distance(value: object) -> Callable[[dict], None]:
    def change(record: dict) -> None:
        if record["hash_type"] == "pdq":
            record["distance"] = value

    return change


def drop_distance(record: dict) -> None:
    if record["hash_type"] == "pdq":
        record.pop("distance")


MATCH_CASES = {
    "distance_a_billion": set_distance(10**9),
    "distance_negative": set_distance(-5),
    "distance_a_string": set_distance("near"),
    "distance_missing": drop_distance,
}


@pytest.mark.parametrize("case", sorted(MATCH_CASES))
def test_report_charts_only_the_valid_distance_range_and_says_what_is_outside(
    case: str, tmp_path: Path
) -> None:
    built = build_report(tmp_path)
    edit_matches(built.out / "matches.jsonl", MATCH_CASES[case])
    result = run_scanner("report", str(built.out), timeout=20)  # the chart loop took over 30 s on 10**9
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    page = (built.out / "report.html").read_text()
    assert "3 match records give a distance outside 0..256" in page
    assert page.count("<title>distance ") <= 2 * (256 + 1)  # two histograms (pdq, dhash), bounded slots


def test_report_survives_odd_values_in_matches_and_manifest(tmp_path: Path) -> None:
    built = build_report(tmp_path)
    edit_matches(built.out / "matches.jsonl", lambda r: r.update(shard=7, list=["a"], category={"x": 1}))
    edit_json(
        built.out / "manifest.json", lambda m: m.update(units="many", lists="ncmec", inputs=[1, {"path": 2}])
    )
    result = run_scanner("report", str(built.out), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "many work units" in (built.out / "report.html").read_text()


def test_report_on_a_manifest_without_its_digests_or_nested_too_deep_is_one_clear_line(
    tmp_path: Path,
) -> None:
    built = build_report(tmp_path)
    edit_json(built.out / "manifest.json", lambda m: m.pop("files"))
    assert_one_clear_line(run_scanner("report", str(built.out), timeout=60), "manifest.json", "files")
    (built.out / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_one_clear_line(run_scanner("report", str(built.out), timeout=60), "manifest.json")


# The last resort: an exception nobody anticipated, raised for real inside a real command.

PLANTED = textwrap.dedent(
    """
    import sys
    import {module} as target

    def planted(*args, **kwargs):
        raise RuntimeError("planted failure " + "x" * 100_000)

    target.{function} = planted
    from scanner.cli.main import main
    raise SystemExit(main(sys.argv[1:]))
    """
)


def run_planted(tmp: Path, module: str, function: str, *argv: str) -> subprocess.CompletedProcess:
    """The real main() in a fresh process, with one internal function replaced by one that raises."""
    script = tmp / "planted.py"
    script.write_text(PLANTED.format(module=module, function=function))
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp / "cache")}
    return subprocess.run(
        [sys.executable, str(script), *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
    )


def logged(line: str) -> Path:
    assert line.startswith("scanner: internal error: RuntimeError: planted failure"), line
    path = Path(line.rsplit("; details in ", 1)[1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "Traceback" in text and "RuntimeError: planted failure" in text and "def planted" not in text
    assert max(len(row) for row in text.splitlines()) < 1000  # a message holding bytes is cut, not copied
    return path


def test_an_unanticipated_error_in_a_scan_is_one_line_and_a_log_in_the_report_directory(
    blocked_shard: dict, tmp_path: Path
) -> None:
    argv = ["scan", blocked_shard["shard"], "--hashlist", blocked_shard["list"], "--out", "out", "--quiet"]
    result = run_planted(tmp_path, "scanner.runners.local", "scan", *argv)
    path = logged(assert_one_clear_line(result, code=ExitCode.INTERNAL))
    assert path.parent == (tmp_path / "out").absolute()


def test_an_unanticipated_error_elsewhere_logs_to_a_private_cache_directory(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run_planted(tmp_path, "scanner.hashing", "hash_file_record", "hash", "image.png")
    path = logged(assert_one_clear_line(result, code=ExitCode.INTERNAL))
    assert path.parent == tmp_path / "cache" / "scanner" / "logs"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_debug_shows_the_stack_instead(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run_planted(tmp_path, "scanner.hashing", "hash_file_record", "--debug", "hash", "image.png")
    assert result.returncode == ExitCode.INTERNAL
    assert "Traceback" in result.stderr and "RuntimeError: planted failure" in result.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("message", "shown"), [("", "(no message)"), ("\n \n", "(no message)"), ("first\nsecond", "first")]
)
def test_an_error_is_named_by_its_type_and_first_line_even_with_no_message(message: str, shown: str) -> None:
    """What the last-resort line and a Ray unit's retry say of an error. An empty message has no first line:
    `str(exc).splitlines()[0]` raised IndexError there (a RayError with no message ended the scan)."""
    from scanner.crashlog import exception_line

    assert exception_line(RuntimeError(message)) == f"RuntimeError: {shown}"


# In a terminal, a planted name cannot hide, reorder or break an error line, nor flood it.

HIDDEN_IN_NAMES = ["\u202e", "\u2028", "\u200b", "\x1b", "\n"]


@pytest.mark.parametrize("char", HIDDEN_IN_NAMES, ids=lambda c: f"U+{ord(c):04X}")
def test_an_error_naming_a_planted_path_shows_its_hidden_characters(char: str, tmp_path: Path) -> None:
    planted = tmp_path / f"report{char}dir"
    result = run_scanner("verify", str(planted), cwd=tmp_path, timeout=60)
    line = assert_one_clear_line(result, f"report<U+{ord(char):04X}>dir")
    assert char not in line


def test_an_error_about_an_overlong_argument_is_cut_to_a_readable_line(tmp_path: Path) -> None:
    result = run_scanner("url", "http://" + "a" * 100_000 + ".example/", cwd=tmp_path, timeout=60)
    line = assert_one_clear_line(result, "characters cut", ".example/")
    assert len(line) < 2_100
