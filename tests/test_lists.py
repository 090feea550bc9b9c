"""Hash lists: every format from real files, every error with its file and line, and matching."""

from __future__ import annotations

import csv
import hashlib
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.errors import ConfigError, HashListError
from scanner.hashtypes import HashType, registered
from scanner.lists import (
    DIHEDRAL_TRANSFORMS,
    DuplicateHashWarning,
    ListSpec,
    Match,
    MatchConfig,
    Matcher,
    Query,
    load_hashlist,
)
from scanner.lists import matcher as matcher_module
from scanner.lists.formats import ListText
from scanner.lists.index import brute_force

SHARED = (Path(__file__).parents[1] / ".." / "shared").resolve()
PDQ_VECTORS = SHARED / "pdq-vectors"
needs_pdq_vectors = pytest.mark.skipif(
    not PDQ_VECTORS.is_dir(), reason=f"PDQ reference vectors not found at {PDQ_VECTORS}"
)

MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()
SHA1_A = hashlib.sha1(b"a").hexdigest()
SHA256_A = hashlib.sha256(b"a").hexdigest()
PDQ_A = hashlib.sha256(b"pdq a").hexdigest()
PDQ_B = hashlib.sha256(b"pdq b").hexdigest()


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def flip(hex_hash: str, n_bits: int) -> str:
    """The hash with its first n_bits (most significant first) inverted."""
    value = int(hex_hash, 16) ^ (((1 << n_bits) - 1) << (len(hex_hash) * 4 - n_bits))
    return f"{value:0{len(hex_hash)}x}"


def query_bytes(hex_hash: str) -> bytes:
    return bytes.fromhex(hex_hash)


def assert_error(path: Path, spec: str, line: int | None, fragment: str) -> None:
    with pytest.raises(HashListError) as caught:
        load_hashlist(spec)
    assert caught.value.path == str(path)
    assert caught.value.line == line
    assert fragment in str(caught.value)
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(caught.value).startswith(where)


# Formats


def test_canonical_csv_keeps_ids_categories_and_extra_columns(tmp_path):
    path = write(
        tmp_path,
        "vetted.csv",
        "id,hash_type,hash,category,source\n"
        f"e1,md5,{MD5_A},A1,hotline\n"
        f"e2,sha1,{SHA1_A},,partner\n"
        f"e3,pdq,{PDQ_A.upper()},B2,hotline\n"
        f",md5,{MD5_B},A1,\n",
    )
    hash_list = load_hashlist(str(path))
    assert hash_list.name == "vetted"
    assert hash_list.format == "csv"
    assert hash_list.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hash_list.counts == {"md5": 2, "pdq": 1, "sha1": 1}
    md5 = hash_list.entries["md5"]
    assert [md5.entry_id(i) for i in range(2)] == ["e1", MD5_B]
    assert [md5.category(i) for i in range(2)] == ["A1", "A1"]
    assert md5.metadata.column("source").to_pylist() == ["hotline", ""]
    assert hash_list.entries["sha1"].category(0) is None
    assert hash_list.entries["pdq"].keys[0].tobytes().hex() == PDQ_A
    assert hash_list.stats["counts"] == hash_list.counts


def test_plain_text_types_by_length_and_skips_comments_and_blank_lines(tmp_path):
    md5 = write(tmp_path, "md5s.txt", f"# vetted md5 list\n\n{MD5_A}\n  {MD5_B.upper()}  \r\n")
    assert load_hashlist(str(md5)).counts == {"md5": 2}
    sha1 = write(tmp_path, "sha1s.txt", f"{SHA1_A}\n")
    assert load_hashlist(str(sha1)).counts == {"sha1": 1}
    assert load_hashlist(str(sha1)).format == "text"


@pytest.mark.parametrize(
    ("value", "ambiguity"), [(PDQ_A, "sha256 or pdq"), ("0123456789abcdef", "phash or dhash")]
)
def test_plain_text_with_an_ambiguous_length_asks_for_the_type(tmp_path, value, ambiguity):
    path = write(tmp_path, "hashes.txt", f"# comment\n{value}\n")
    assert_error(path, str(path), 2, f"could be {ambiguity}: name the type as TYPE:PATH")
    for hash_type in ambiguity.split(" or "):
        assert load_hashlist(f"{hash_type}:{path}").counts == {hash_type: 1}


def test_plain_text_with_a_type_prefix(tmp_path):
    path = write(tmp_path, "phashes.txt", "0123456789abcdef\nfedcba9876543210\n")
    hash_list = load_hashlist(f"named=phash:{path}")
    assert (hash_list.name, hash_list.counts) == ("named", {"phash": 2})


def test_threatexchange_signal_lines(tmp_path):
    path = write(
        tmp_path,
        "pytx.txt",
        f"pdq {PDQ_A}\nvideo_md5 {MD5_A}\nphoto_md5\t{MD5_B}\nmd5 {MD5_A}\nurl_md5 {MD5_B}\n",
    )
    with pytest.warns(DuplicateHashWarning, match="line 4"):
        hash_list = load_hashlist(str(path))
    assert hash_list.format == "threatexchange"
    assert hash_list.counts == {"md5": 2, "pdq": 1, "url_md5": 1}
    assert hash_list.duplicates_merged == 1


def test_threatexchange_unknown_signal_types_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "pytx.txt", f"pdq {PDQ_A}\ntrend_query cats\nphotodna AAAA\ntrend_query dogs\n")
    hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"pdq": 1}
    assert hash_list.stats["skipped"] == {
        "photodna": skipped_stats(1, "photodna", 3),
        "trend_query": skipped_stats(2, "trend_query", 2),
    }


def skipped_stats(entries, type_name, first_line):
    why = f"no hasher for {type_name}: install a plug-in"
    return {"entries": entries, "reason": "no_hasher", "why": why, "first_line": first_line}


def test_a_hex_hash_with_a_trailing_word_is_not_a_signal_line(tmp_path):
    path = write(tmp_path, "md5s.txt", "d41d8cd98f00b204e9800998ecf8427e first\n")  # a letter first
    assert_error(path, str(path), 1, "unrecognised list format")


def test_threatexchange_malformed_line_names_its_line(tmp_path):
    path = write(tmp_path, "pytx.txt", f"pdq {PDQ_A}\n\npdq {PDQ_B} extra\n")
    assert_error(path, str(path), 3, "expected '<signal_type> <hash>'")


def test_pdq_hashio_lines_with_prefix_and_metadata(tmp_path):
    path = write(
        tmp_path,
        "hashio.txt",
        f"hash={PDQ_A},first image\n{PDQ_B},100,./dir/b.jpg\n{flip(PDQ_A, 3)}\n",
    )
    hash_list = load_hashlist(str(path))
    assert hash_list.format == "pdq-hashio"
    pdq = hash_list.entries["pdq"]
    assert [pdq.entry_id(i) for i in range(3)] == ["first image", "100,./dir/b.jpg", flip(PDQ_A, 3)]


def test_ncmec_style_export_with_liberal_column_names(tmp_path):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["Image ID", "Algorithm", "Hash Value", "Classification"])
        writer.writerow(["1001", "MD5", MD5_A, "A1"])
        writer.writerow(["1001", "SHA1", SHA1_A, "A1"])
        writer.writerow(["1002", "PDQ", PDQ_A, "B1"])
    hash_list = load_hashlist(str(path))
    assert hash_list.format == "ncmec-csv"
    assert hash_list.counts == {"md5": 1, "pdq": 1, "sha1": 1}
    assert hash_list.entries["sha1"].entry_id(0) == "1001"
    assert hash_list.entries["pdq"].category(0) == "B1"


def test_ncmec_style_export_skips_type_values_it_does_not_know(tmp_path):
    path = write(tmp_path, "export.csv", f"type,hash,id\nmd5,{MD5_A},1\nsha512,{SHA256_A},2\nPDNA,AAAA,3\n")
    hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1}
    assert hash_list.stats["skipped"] == {
        "pdna": skipped_stats(1, "pdna", 4),
        "sha512": skipped_stats(1, "sha512", 3),
    }


def test_a_list_of_only_unknown_types_is_refused_naming_them(tmp_path):
    path = write(tmp_path, "export.csv", f"type,hash\nsha512,{SHA256_A}\nsha512,{SHA256_A}\n")
    assert_error(path, str(path), None, "unknown hash type 'sha512' on 2 entries (no hasher for sha512")


def test_a_type_value_that_is_no_name_names_its_line(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash\nmd5,{MD5_A}\n,{MD5_B}\n")
    assert_error(path, str(path), 3, "not a hash type name: ''")


def test_a_malformed_entry_of_a_known_type_beside_unknown_ones_names_its_line(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash\npdna,AAAA\nmd5,{MD5_A}\nmd5,{MD5_B[:-1]}\n")
    assert_error(path, str(path), 4, "a md5 hash has 32 hex digits, this has 31")


def test_url_and_domain_lists_normalise_their_values(tmp_path):
    urls = write(tmp_path, "urls.txt", "HTTP://Example.COM:80/a?b=1#frag\nhttps://example.org\n")
    url_list = load_hashlist(f"url:{urls}")
    url_entries = url_list.entries["url"]
    assert [url_entries.entry_id(i) for i in range(2)] == ["http://example.com/a?b=1", "https://example.org/"]
    domains = write(tmp_path, "domains.txt", "Example.COM.\nbücher.de\n")
    domain_entries = load_hashlist(f"domain:{domains}").entries["domain"]
    assert [domain_entries.entry_id(i) for i in range(2)] == ["example.com", "xn--bcher-kva.de"]


def test_bad_url_names_its_line(tmp_path):
    path = write(tmp_path, "urls.txt", "https://example.com/\nftp://example.com/file\n")
    assert_error(path, f"url:{path}", 2, "not a valid url")


def test_the_shipped_demo_list_is_synthetic_and_loads():
    hash_list = load_hashlist(str(Path(__file__).parents[1] / "hashlists" / "demo-NOT-REAL.csv"))
    assert hash_list.counts == {"md5": 3, "pdq": 2, "sha1": 1}
    categories = {entries.category(i) for entries in hash_list.entries.values() for i in range(len(entries))}
    assert categories == {"demo-not-real"}


# Specs


def test_spec_forms(tmp_path):
    path = write(tmp_path, "list.txt", f"{MD5_A}\n")
    assert ListSpec.parse(str(path)) == ListSpec("list", None, path)
    assert ListSpec.parse(f"mine={path}") == ListSpec("mine", None, path)
    assert ListSpec.parse(f"md5:{path}") == ListSpec("list", "md5", path)
    assert ListSpec.parse(f"mine=MD5:{path}") == ListSpec("mine", "md5", path)


def test_spec_paths_containing_separators_still_load(tmp_path):
    path = write(tmp_path, "md5:odd=name.txt", f"{MD5_A}\n")
    hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1}


def test_unknown_type_in_spec_is_refused(tmp_path):
    path = write(tmp_path, "list.txt", f"{MD5_A}\n")
    with pytest.raises(HashListError, match="unknown hash type 'sha3'"):
        load_hashlist(f"sha3:{path}")


def test_type_prefix_on_a_self_typed_format_is_refused(tmp_path):
    path = write(tmp_path, "pytx.txt", f"pdq {PDQ_A}\n")
    assert_error(path, f"pdq:{path}", None, "names its own hash types")


# Errors


def test_wrong_hash_length_names_its_line(tmp_path):
    path = write(tmp_path, "md5s.txt", f"{MD5_A}\n{MD5_B}\n{MD5_B[:-1]}\n")
    assert_error(path, str(path), 3, "a md5 hash has 32 hex digits, this has 31")


def test_non_hex_names_its_line(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash\nmd5,{MD5_A}\n\nmd5,{MD5_B[:-1]}g\n")
    assert_error(path, str(path), 4, "md5 hash is not hexadecimal")


def test_unknown_type_in_canonical_csv_is_skipped_and_counted(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash\nmd5,{MD5_A}\nsha3,{SHA256_A}\n")
    hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1}
    assert hash_list.stats["skipped"] == {"sha3": skipped_stats(1, "sha3", 3)}


def test_csv_row_with_wrong_field_count_names_its_line(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash,id\n\nmd5,{MD5_A},1\nmd5,{MD5_B},2,surplus\n")
    assert_error(path, str(path), 4, "expected 3 comma-separated fields")


def test_csv_value_spanning_lines_names_its_line(tmp_path):
    path = write(tmp_path, "list.csv", f'hash_type,hash,id\nmd5,{MD5_A},1\nmd5,{MD5_B},"two\nlines"\n')
    assert_error(path, str(path), 3, "a quoted value spans lines")


@pytest.mark.parametrize(
    ("rows", "line", "error"),
    [
        # Before: the row with a surplus field was named one line early, as if the value were one line.
        ('md5,{a},"two\nlines"\nmd5,{b},2,surplus\n', 3, "a quoted value spans lines"),
        ('md5,{a},1\n\nmd5,{b},"two\nlines"\nmd5,{b},2,surplus\n', 5, "a quoted value spans lines"),
        ('md5,{a},1,surplus\nmd5,{b},"two\nlines"\n', 3, "expected 3 comma-separated fields"),
        ('md5,{a},1,surplus\nmd5,{a},1,surplus\nmd5,{b},"two\nlines"\n', 3, "expected 3 comma-separated"),
    ],
)
def test_csv_names_the_first_malformed_line_whether_a_value_spans_lines_or_a_row_has_more_fields(
    tmp_path, rows, line, error
):
    path = write(tmp_path, "list.csv", "# note\nhash_type,hash,id\n" + rows.format(a=MD5_A, b=MD5_B))
    assert_error(path, str(path), line, error)


def test_csv_after_comment_lines(tmp_path):
    path = write(
        tmp_path, "list.csv", f"# exported 2024-06-01\n\nhash_type,hash,id\nmd5,{MD5_A},1\nmd5,{MD5_B}\n"
    )
    assert_error(path, str(path), 5, "expected 3 comma-separated fields")
    write(tmp_path, "list.csv", f"# exported 2024-06-01\n\nhash_type,hash,id\nmd5,{MD5_A},1\n")
    assert load_hashlist(str(path)).entries["md5"].entry_id(0) == "1"


def test_one_id_for_two_different_hashes_names_both_lines(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash,id\nmd5,{MD5_A},x\nsha1,{SHA1_A},x\nmd5,{MD5_B},x\n")
    assert_error(path, str(path), 4, "id 'x' is given to two different md5 hashes (the first at line 2)")


def test_repeated_hashes_are_merged_with_a_warning(tmp_path):
    path = write(tmp_path, "md5s.txt", f"{MD5_A}\n{MD5_B}\n{MD5_A.upper()}\n{MD5_A}\n")
    with pytest.warns(DuplicateHashWarning, match=r"2 repeated md5 hash\(es\).*line 3"):
        hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 2}
    assert hash_list.entries["md5"].keys.ctypes.data % 64 == 0  # indexes use it in place, without a copy
    assert hash_list.duplicates_merged == 2
    assert hash_list.stats["duplicates_merged"] == 2


def test_the_command_says_a_repeated_hash_in_one_line(tmp_path, scanner_cli):
    """A warning reaches the user as one line, not Python's display with a line of the scanner's source."""
    listed = write(tmp_path, "md5s.txt", f"{MD5_A}\n{MD5_A}\n")
    shard = write(tmp_path, "urls.csv", "url\nhttp://127.0.0.1:9/a.jpg\n")
    args = ["scan", str(shard), "--hashlist", str(listed), "--out", str(tmp_path / "out"), "--quiet"]
    done = scanner_cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"scanner: warning: {listed}: 1 repeated md5 hash(es) merged into their first entry (first repeat at "
        "line 2)"
    ]


@pytest.mark.parametrize("text", ["", "\n\n# only comments\n", "hash_type,hash\n"])
def test_empty_lists_are_refused(tmp_path, text):
    path = write(tmp_path, "empty.csv", text)
    with pytest.raises(HashListError, match=r"empty|no entries") as caught:
        load_hashlist(str(path))
    assert str(caught.value).startswith(str(path))


def test_unreadable_files_are_refused(tmp_path):
    missing = tmp_path / "missing.txt"
    assert_error(missing, str(missing), None, "cannot read the list")
    assert_error(tmp_path, str(tmp_path), None, "cannot read the list")


def test_non_utf8_names_its_line(tmp_path):
    path = write(tmp_path, "list.txt", f"{MD5_A}\n{MD5_B}\n".encode() + b"\xff\xfe\n")
    assert_error(path, str(path), 3, "not UTF-8")


def test_stray_carriage_return_names_its_line(tmp_path):
    path = write(tmp_path, "list.txt", f"{MD5_A}\r\n{MD5_B}\r{MD5_A}\n")
    assert_error(path, str(path), 2, "a carriage return inside a line")


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    path = write(tmp_path, "list.csv", b"\xef\xbb\xbf" + f"hash_type,hash\nmd5,{MD5_A}\n".encode())
    assert load_hashlist(str(path)).counts == {"md5": 1}


line_text = st.text(alphabet="0123456789abcdefABCDEFxyz ,=:#\t\r\"'-_.pdqmshahtypeurl", max_size=80)
list_text = st.one_of(
    st.lists(line_text, max_size=8).map("\n".join),
    st.lists(line_text, max_size=6).map(lambda lines: "hash_type,hash,id\n" + "\n".join(lines)),
    st.lists(line_text, max_size=6).map(lambda lines: "\n".join(f"pdq {line}" for line in lines)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(list_text.map(str.encode), st.binary(max_size=200)),
    prefix=st.sampled_from(["", "pdq:", "md5:", "url:", "domain:"]),
)
def test_any_content_loads_or_raises_hash_list_error(tmp_path, content, prefix):
    path = write(tmp_path, "fuzz.txt", content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateHashWarning)
        try:
            hash_list = load_hashlist(f"{prefix}{path}")
        except HashListError as error:
            assert error.path == str(path)
            return
    assert sum(hash_list.counts.values()) > 0


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="0af#,\t\r \x0b\x0c\x1c\x1f\u00a0\u3000\u2028é", max_size=12), max_size=8)
)
def test_lines_are_split_and_trimmed_as_pyarrow_does(lines):
    """The packed ASCII fast path and its Unicode fallback give exactly pyarrow's split and trim."""
    data = "\n".join(lines).encode()
    whole = pa.array([data.decode()], pa.large_string())
    expected = pc.utf8_trim_whitespace(pc.split_pattern(whole, "\n").flatten()).to_pylist()
    assert ListText.from_bytes(data).lines.to_pylist() == expected


@pytest.mark.parametrize("lead", [0, 65_500, 65_530, 70_000, 4_200_000])
def test_the_first_content_line_is_found_wherever_it_lies(tmp_path, lead):
    """The header is looked for in prefixes of the file cut at line ends (64 KiB, 4 MiB, then the whole):
    comments before it that end near, on or past a cut, or a header that straddles one, change nothing."""
    comments = b"".join(b"# " + b"x" * 97 + b"\n" for _ in range(lead // 100)) + b"#" * (lead % 100) + b"\n"
    data = comments + b"  hash_type,hash,id\npdq," + b"ab" * 32 + b",E1\n"
    text = ListText.from_bytes(data)
    header_line = data.count(b"\n", 0, len(comments)) + 1
    assert (text.first_line, text.first_content_line()) == ("hash_type,hash,id", header_line)
    assert text.lines[header_line - 1].as_py() == text.first_line and text.content[header_line - 1]
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    entries = load_hashlist(str(path)).entries["pdq"]
    assert (entries.entry_id(0), entries.keys[0].tobytes()) == ("E1", b"\xab" * 32)


def test_a_csv_row_longer_than_the_readers_block_loads(tmp_path):
    from scanner.lists.formats import CSV_BLOCK

    note = "n" * (3 * CSV_BLOCK)
    path = tmp_path / "list.csv"
    path.write_text(f"hash_type,hash,id,note\npdq,{'ab' * 32},E1,{note}\nmd5,{'cd' * 16},E2,short\n")
    loaded = load_hashlist(str(path))
    assert loaded.entries["pdq"].fields(0) == (("note", note),)
    assert loaded.entries["md5"].entry_id(0) == "E2"


def test_a_long_whitespace_run_is_trimmed_too():
    data = b"abc" + b" " * 10_000 + b"\n\t\t\t\t\t\tdef\n"
    assert ListText.from_bytes(data).lines.to_pylist() == ["abc", "def", ""]


# Matching


def pdq_list(tmp_path: Path, name: str, rows: list[tuple[str, str, str]]) -> Path:
    body = "".join(f"pdq,{value},{entry},{category}\n" for value, entry, category in rows)
    return write(tmp_path, f"{name}.csv", "hash_type,hash,id,category\n" + body)


def test_exact_and_pdq_matches_carry_entry_details(tmp_path):
    path = write(tmp_path, "mixed.csv", f"hash_type,hash,id,category\nmd5,{MD5_A},m1,A1\npdq,{PDQ_A},p1,B1\n")
    matcher = Matcher.from_lists([load_hashlist(str(path))])
    assert matcher.needed_hash_types == {"md5", "pdq"}
    query = Query({"md5": query_bytes(MD5_A), "pdq": query_bytes(flip(PDQ_A, 5))}, pdq_quality=90)
    assert matcher.match_batch([query, Query({"md5": query_bytes(MD5_B)})]) == [
        [
            Match("mixed", "m1", "A1", "md5", 0, None, value=query_bytes(MD5_A).hex()),
            Match("mixed", "p1", "B1", "pdq", 5, 90, value=query_bytes(flip(PDQ_A, 5)).hex()),
        ],  # value: the query's own hash that matched
        [],
    ]


def test_pdq_threshold_is_inclusive_and_quality_gated(tmp_path):
    path = pdq_list(tmp_path, "vetted", [(PDQ_A, "a", "")])
    matcher = Matcher.from_lists([load_hashlist(str(path))])
    at_31 = Query({"pdq": query_bytes(flip(PDQ_A, 31))}, pdq_quality=50)
    at_32 = Query({"pdq": query_bytes(flip(PDQ_A, 32))}, pdq_quality=100)
    low_quality = Query({"pdq": query_bytes(PDQ_A)}, pdq_quality=49)
    assert [[m.distance for m in ms] for ms in matcher.match_batch([at_31, at_32, low_quality])] == [
        [31],
        [],
        [],
    ]


def test_per_list_threshold_overrides(tmp_path):
    strict = load_hashlist(str(pdq_list(tmp_path, "strict", [(PDQ_A, "s", "")])))
    loose = load_hashlist(str(pdq_list(tmp_path, "loose", [(PDQ_A, "l", "")])))
    config = MatchConfig(list_thresholds={"strict": {"pdq": 10}, "loose": {"pdq": 40}})
    matcher = Matcher.from_lists([strict, loose], config)
    results = matcher.match_batch([Query({"pdq": query_bytes(flip(PDQ_A, d))}, 100) for d in (5, 20, 35)])
    assert [[(m.list, m.distance) for m in ms] for ms in results] == [
        [("loose", 5), ("strict", 5)],
        [("loose", 20)],
        [("loose", 35)],
    ]


def test_a_pickled_matcher_matches_the_same(tmp_path):
    path = write(
        tmp_path,
        "mixed.csv",
        f"hash_type,hash,id\nmd5,{MD5_A},m1\npdq,{PDQ_A},p1\nphash,00000000000000ff,h1\n",
    )
    matcher = Matcher.from_lists([load_hashlist(str(path))])
    queries = [Query({"md5": query_bytes(MD5_A), "pdq": query_bytes(flip(PDQ_A, 9)), "phash": bytes(8)}, 80)]
    restored = pickle.loads(pickle.dumps(matcher))
    assert restored.match_batch(queries) == matcher.match_batch(queries)
    assert len(matcher.match_batch(queries)[0]) == 3


def test_url_matches_never_wait_for_an_image_index_still_building(tmp_path, monkeypatch):
    """Image-hash indexes build in a thread: URL screening answers meanwhile, the first image match
    waits for its index, and the build's own error reaches whoever matches against it."""
    release = threading.Event()
    built = matcher_module.HammingIndex

    def slow_index(keys, threshold):
        assert release.wait(30)
        return built(keys, threshold)

    monkeypatch.setattr(matcher_module, "HammingIndex", slow_index)
    urls = write(tmp_path, "urls.txt", "example.com\n")
    pdq = pdq_list(tmp_path, "vetted", [(PDQ_A, "a", "")])
    matcher = Matcher.from_lists([load_hashlist(f"domains=domain:{urls}"), load_hashlist(str(pdq))])
    url_query = Query({"domain": b"example.com"})
    assert [m.entry_id for m in matcher.match_batch([url_query])[0]] == ["example.com"]
    release.set()
    found = matcher.match_batch([Query({"pdq": query_bytes(flip(PDQ_A, 3))}, 90)])
    assert [(m.entry_id, m.distance) for m in found[0]] == [("a", 3)]

    def failing_index(keys, threshold):
        raise MemoryError("no room for the index")

    monkeypatch.setattr(matcher_module, "HammingIndex", failing_index)
    broken = Matcher.from_lists([load_hashlist(str(pdq))])
    with pytest.raises(MemoryError, match="no room"):
        broken.match_batch([Query({"pdq": query_bytes(PDQ_A)}, 90)])


def test_bad_configuration_is_refused(tmp_path):
    hash_list = load_hashlist(str(pdq_list(tmp_path, "vetted", [(PDQ_A, "a", "")])))
    with pytest.raises(ConfigError, match="unknown hash list"):
        Matcher.from_lists([hash_list], MatchConfig(list_thresholds={"other": {"pdq": 3}}))
    with pytest.raises(ConfigError, match="no md5 hashes"):
        Matcher.from_lists([hash_list], MatchConfig(list_thresholds={"vetted": {"md5": 3}}))
    with pytest.raises(ConfigError, match="share a name"):
        Matcher.from_lists([hash_list, hash_list])
    with pytest.raises(ConfigError, match="pdq_threshold"):
        MatchConfig(pdq_threshold=300)


def test_every_match_across_lists_types_and_entries_in_a_stable_order(tmp_path):
    b_list = write(
        tmp_path,
        "b.csv",
        f"hash_type,hash,id\npdq,{flip(PDQ_A, 2)},z\npdq,{flip(PDQ_A, 1)},y\npdq,{PDQ_B},x\nmd5,{MD5_A},w\n",
    )
    a_list = write(tmp_path, "a.txt", f"{PDQ_A}\n")
    matcher = Matcher.from_lists([load_hashlist(str(b_list)), load_hashlist(f"pdq:{a_list}")])
    [matches] = matcher.match_batch([Query({"pdq": query_bytes(PDQ_A), "md5": query_bytes(MD5_A)}, 100)])
    assert [(m.list, m.hash_type, m.distance, m.entry_id) for m in matches] == [
        ("a", "pdq", 0, PDQ_A),
        ("b", "md5", 0, "w"),
        ("b", "pdq", 1, "y"),
        ("b", "pdq", 2, "z"),
    ]


def test_phash_and_dhash_default_thresholds(tmp_path):
    path = write(tmp_path, "p.csv", "hash_type,hash\nphash,00000000000000ff\ndhash,ff00000000000000\n")
    matcher = Matcher.from_lists([load_hashlist(str(path))])
    query = Query({"phash": bytes(8), "dhash": bytes.fromhex("ffff000000000000")})
    assert [(m.hash_type, m.distance) for m in matcher.match_batch([query])[0]] == [
        ("dhash", 8),
        ("phash", 8),
    ]


def test_domain_matches_its_parents_and_url_matches_normalised(tmp_path):
    domains_path = write(tmp_path, "domains.txt", "example.com\n")
    urls_path = write(tmp_path, "urls.txt", "http://example.org/x\n")
    domains, urls = load_hashlist(f"domain:{domains_path}"), load_hashlist(f"url:{urls_path}")
    matcher = Matcher.from_lists([domains, urls])
    queries = [
        Query({"domain": b"img.cdn.Example.com", "url": b"HTTP://EXAMPLE.org:80/x#top"}),
        Query({"domain": b"notexample.com", "url": b"http://example.org/y"}),
    ]
    assert [[(m.list, m.entry_id) for m in ms] for ms in matcher.match_batch(queries)] == [
        [("domains", "example.com"), ("urls", "http://example.org/x")],
        [],
    ]


def test_dihedral_matching_reports_the_transform_and_prefers_the_original(tmp_path):
    rng = np.random.default_rng(7)
    variants = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in DIHEDRAL_TRANSFORMS]
    path = pdq_list(tmp_path, "vetted", [(flip(variants[2], 4), "rotated", ""), (variants[0], "same", "")])
    hash_list = load_hashlist(str(path))
    query = Query({"pdq": query_bytes(variants[0])}, 100, tuple(query_bytes(v) for v in variants))
    plain = Matcher.from_lists([hash_list]).match_batch([query])
    assert [(m.entry_id, m.transform) for m in plain[0]] == [("same", None)]
    dihedral = Matcher.from_lists([hash_list], MatchConfig(pdq_dihedral=True))
    assert "pdq_dihedral" in dihedral.needed_hash_types
    [matches] = dihedral.match_batch([query])
    assert [(m.entry_id, m.distance, m.transform) for m in matches] == [
        ("same", 0, None),
        ("rotated", 4, "rotate180"),
    ]


def test_dihedral_names_agree_with_the_hashing_stage():
    from scanner.hashing import DIHEDRAL_TRANSFORMS as hashed_in_this_order

    assert hashed_in_this_order == DIHEDRAL_TRANSFORMS


@needs_pdq_vectors
def test_dihedral_matching_on_reference_hashes(tmp_path):
    rows = list(csv.DictReader((PDQ_VECTORS / "expected" / "cpp_rebuilt_generated_dihedral.csv").open()))
    bridge = [row for row in rows if row["image"].endswith("bridge-1-original.jpg")]
    assert [row["note"].removeprefix("dihedral=") for row in bridge][:2] == ["ORIGINAL", "ROTATE90"]
    hashes = [row["expected_hash"] for row in bridge]
    path = write(tmp_path, "rotated.txt", f"{hashes[1]}\n")
    matcher = Matcher.from_lists([load_hashlist(f"pdq:{path}")], MatchConfig(pdq_dihedral=True))
    query = Query({"pdq": query_bytes(hashes[0])}, 100, tuple(query_bytes(h) for h in hashes))
    [matches] = matcher.match_batch([query])
    assert [(m.distance, m.transform) for m in matches] == [(0, "rotate90")]


@needs_pdq_vectors
def test_reference_haystack_and_needles_match_the_brute_force_oracle():
    reg = PDQ_VECTORS / "pdq" / "data" / "reg-test-input"
    haystack = load_hashlist(f"pdq:{reg / 'haystack.txt'}")
    needles = load_hashlist(f"pdq:{reg / 'needles.txt'}").entries["pdq"].keys
    assert haystack.counts == {"pdq": 1350}
    matcher = Matcher.from_lists([haystack])
    results = matcher.match_batch([Query({"pdq": key.tobytes()}, 100) for key in needles])
    found = {(q, m.entry_id, m.distance) for q, matches in enumerate(results) for m in matches}
    keys = haystack.entries["pdq"].keys
    expected = {
        (int(q), keys[e].tobytes().hex(), int(d))
        for q, e, d in zip(*brute_force(keys, needles, 31), strict=True)
    }
    assert found == expected
    assert len(expected) > len(needles)


def test_a_type_registered_at_run_time_is_no_longer_skipped(tmp_path):
    """Unknown means unknown to the live registry: once a plug-in registers `photodna`, its entries load."""
    path = write(tmp_path, "pytx.txt", f"pdq {PDQ_A}\nphotodna {MD5_A}\n")
    assert load_hashlist(str(path)).counts == {"pdq": 1}
    with registered(HashType("photodna", 16, "image", index="hamming", threshold=3)):
        hash_list = load_hashlist(str(path))
        assert hash_list.counts == {"pdq": 1, "photodna": 1}
        assert hash_list.stats["skipped"] == {}


def test_a_csv_names_pdna_as_ncmec_does_and_a_photodna_plug_in_takes_it(tmp_path):
    path = write(tmp_path, "list.csv", f"hash_type,hash,id\npdq,{PDQ_A},a\npdna,{MD5_A},b\n")
    assert load_hashlist(str(path)).stats["skipped"]["pdna"]["entries"] == 1
    with registered(HashType("photodna", 16, "image", index="hamming", threshold=3)):
        hash_list = load_hashlist(str(path))
        assert hash_list.counts == {"pdq": 1, "photodna": 1} and hash_list.stats["skipped"] == {}


_HEX = "0123456789abcdef"


@pytest.mark.parametrize(
    ("lines", "end", "even"),
    [
        ([_HEX * 4] * 5, "\n", True),  # one fixed-width hash a line: one strided copy
        ([_HEX * 4] * 5, "", True),  # no newline after the last
        ([_HEX + "\r"] * 5, "\n", True),  # CRLF
        ([f" {_HEX}  "] * 5, "\n", True),  # the same whitespace around each
        ([_HEX] * 3 + [_HEX[:-1]] + [_HEX], "\n", False),  # one shorter line
        ([_HEX] * 2 + [""] + [_HEX] * 2, "\n", False),  # a blank line
        ([_HEX] * 2 + [" " + _HEX] + [_HEX] * 2, "\n", False),  # equal once trimmed, not evenly spaced
        ([_HEX], "\n", False),  # one line
    ],
)
def test_lines_split_the_same_whether_evenly_spaced_or_not(
    lines: list[str], end: str, even: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanner.lists import formats

    data = ("\n".join(lines) + end).encode()
    expected = [line.strip() for line in data.decode().split("\n")]
    assert ListText.from_bytes(data).lines.to_pylist() == expected
    monkeypatch.setattr(formats, "NEWLINE_BLOCK", 7)  # line ends searched in blocks that split lines
    assert ListText.from_bytes(data).lines.to_pylist() == expected
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.append(np.flatnonzero(buffer == ord("\n")), len(buffer))
    starts = np.append(0, ends[:-1] + 1)
    trimmed = [
        (s + len(line) - len(line.lstrip()), s + len(line.rstrip()))
        for s, line in zip(starts, data.decode().split("\n"), strict=True)
    ]
    starts, ends = np.array([s for s, _ in trimmed]), np.array([e for _, e in trimmed])
    assert (formats._even_lines(buffer, starts, ends) is not None) == even


# Quotes: across the reader's blocks, and left open at the end.


def _rows_up_to(size: int) -> str:
    """Well-formed rows of exactly `size` bytes (the last one padded through its id)."""
    row = f"md5,{MD5_A},1\n"
    count = size // len(row) - 1
    last = f"md5,{MD5_A},"
    return row * count + last + "9" * (size - count * len(row) - len(last) - 1) + "\n"


@pytest.mark.parametrize("before", [3, 20, 37])
def test_csv_value_spanning_lines_across_the_readers_block_boundary_names_its_line(tmp_path, before):
    """Before, the reader cut its blocks at line ends without following quotes: a row whose quoted value
    opened within `before` bytes of the cut was parsed as if the quote ended there, and its next line
    became a row of one field, reported one line late with the wrong message."""
    from scanner.lists.formats import CSV_BLOCK

    header = "hash_type,hash,id\n"
    filler = _rows_up_to(CSV_BLOCK - before)
    text = header + filler + f'md5,{MD5_B},"two\nlines"\n' + f"md5,{MD5_A},1\n"
    path = write(tmp_path, "list.csv", text)
    assert_error(path, str(path), 1 + filler.count("\n") + 1, "a quoted value spans lines")


@pytest.mark.parametrize("ending", ["\n", "\n\n", ""])
def test_csv_unterminated_quote_on_the_last_row_is_an_error(tmp_path, ending):
    """A quote left open on the last row swallows the line break(s) into the value (or ends at the end of
    the file): the row counts match, and before, the list loaded with an id of 'oops\\n'."""
    path = write(tmp_path, "list.csv", f'hash_type,hash,id\nmd5,{MD5_A},1\nmd5,{MD5_B},"oops{ending}')
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(path))
    assert caught.value.path == str(path) and caught.value.line == 3


def test_csv_unterminated_quote_in_a_large_list_is_a_named_error(tmp_path):
    """Past one reader block, an unterminated quote is pyarrow's ArrowInvalid (no row named): before, the
    CLI showed an internal error (exit 70) naming neither the file nor the line."""
    from scanner.lists.formats import CSV_BLOCK

    row = f"md5,{MD5_A},1\n"
    text = "hash_type,hash,id\n" + row * 5 + f'md5,{MD5_B},"oops\n' + row * (2 * CSV_BLOCK // len(row))
    path = write(tmp_path, "list.csv", text)
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(path))
    assert caught.value.path == str(path) and caught.value.line == 7


def test_csv_past_one_block_names_a_bad_row_before_an_open_quote(tmp_path):
    """pyarrow names no row when a quote is left open past its block: the first bad record is found by
    Python's csv, a row with too few fields before it included (a second review's find)."""
    from scanner.lists.formats import CSV_BLOCK

    row = f"md5,{MD5_A},1\n"
    text = "hash_type,hash,id\n" + row * 3 + f"md5,{MD5_B}\n" + row + f'md5,{MD5_B},"oops\n'
    path = write(tmp_path, "list.csv", text + row * (2 * CSV_BLOCK // len(row)))
    assert_error(path, str(path), 5, "expected 3 comma-separated fields")
