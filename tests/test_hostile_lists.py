"""Hostile hash lists found by review (scanner/lists): each test failed before its fix (8dd9abe). Small inputs
only; no network."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from scanner.errors import HashListError
from scanner.hashtypes import HashType, registered
from scanner.lists import load_hashlist, ncmec

MD5_A = "670f8a29aee4a068e0a12171e1cc294c"
MD5_B = "0" * 31 + "1"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
OPEN = '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">\n'


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def image(entry_id: str, fingerprints: str, member: str = "1", tag: str = "image") -> str:
    return (
        f'<{tag}><member id="{member}">M{member}</member><id>{entry_id}</id>'
        f"<classification>A1</classification><fingerprints>{fingerprints}</fingerprints></{tag}>"
    )


def document(*entries: str, kind: str = "images") -> str:
    return HEAD + OPEN + f"<{kind}>\n" + "\n".join(entries) + f"\n</{kind}>\n</queryResult>\n"


# 1. formats._skipped_by_name was quadratic in distinct unknown type names: 40k names (340 KB) took 5.3 s,
# 300k (2.8 MB) 258 s, and each was named in the reports. Past MAX_UNKNOWN_TYPES the list is refused.
def test_many_distinct_unknown_type_names_are_refused_at_the_first(tmp_path):
    rows = "".join(f"t{i},x\n" for i in range(40_000))
    path = write(tmp_path, "types.csv", f"hash_type,hash\n{rows}md5,{MD5_A}\n")
    with pytest.raises(HashListError, match="40000 different hash type names") as caught:
        load_hashlist(str(path))
    assert caught.value.line == 2


def test_unknown_type_names_up_to_the_limit_are_counted_each_with_its_first_line(tmp_path):
    from scanner.lists.formats import MAX_UNKNOWN_TYPES

    names = [f"t{i}" for i in range(MAX_UNKNOWN_TYPES)]
    rows = "".join(f"{name},x\n" for name in reversed(names)) + f"md5,{MD5_A}\n" + f"{names[0]},y\n"
    skipped = load_hashlist(str(write(tmp_path, "types.csv", f"hash_type,hash\n{rows}"))).stats["skipped"]
    assert len(skipped) == MAX_UNKNOWN_TYPES
    assert (skipped["t0"]["entries"], skipped["t0"]["first_line"]) == (2, 1 + MAX_UNKNOWN_TYPES)
    assert (skipped[names[-1]]["entries"], skipped[names[-1]]["first_line"]) == (1, 2)


# 2. A hex digest in the type column (a row with swapped fields) is "an unknown hash type": the entry is
# silently left out, and the list's own hash is printed, and written to manifest/summary/report.html.
@pytest.mark.parametrize(
    "text, name",
    [
        (f"id,hash_type,hash\ne1,md5,{MD5_A}\ne2,{MD5_B},md5\n", "swapped.csv"),
        (f"md5 {MD5_A}\n{MD5_B} md5\n", "swapped.txt"),
    ],
)
def test_a_hash_in_the_type_column_is_an_error_not_a_skipped_type(tmp_path, text, name):
    path = write(tmp_path, name, text)
    try:
        hash_list = load_hashlist(str(path))
    except HashListError as error:
        assert error.line == 3 if name.endswith(".csv") else error.line == 2
        return
    assert MD5_B not in str(hash_list.stats), "a list hash leaks into the stats as a type name"
    pytest.fail(f"entry lost as a skipped type: {hash_list.stats['skipped']}")


# 3. ncmec.read_pages counts a page's lines by "\n"; expat also ends lines at a lone "\r". A folder whose
# first page has CR line ends blames the next page, at the wrong line.
def test_a_page_with_cr_line_ends_is_named_in_a_folders_error(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    first = document(image("1", f"<md5>{MD5_A}</md5>"), image("2", "<md5>nothex</md5>")).replace("\n", "\r")
    write(folder, "page-1.xml", first)
    write(folder, "page-2.xml", document(image("3", f"<md5>{'a' * 32}</md5>")))
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(folder))
    assert (caught.value.path, caught.value.line) == (str(folder / "page-1.xml"), 5)


# 4. For a folder, lines inside messages (the first line of a repeated id, the duplicate warning, a skipped
# type's first_line) were whole-folder numbers, matching no line of any page.
def after_a_long_first_page(tmp_path: Path) -> Path:
    """A folder of pages whose first holds 20 entries: a whole-folder line number is no line of page 2."""
    folder = tmp_path / "pages"
    folder.mkdir()
    filler = "\n".join(image(f"f{i}", f"<sha1>{i + 1:040x}</sha1>") for i in range(20))
    write(folder, "page-1.xml", document(filler))
    return folder


def test_a_folders_repeated_id_names_the_earlier_page_and_line(tmp_path):
    folder = after_a_long_first_page(tmp_path)
    write(folder, "page-2.xml", document(image("b", f"<md5>{MD5_A}</md5>")))  # line 4
    write(folder, "page-3.xml", document(image("b", f"<md5>{MD5_B}</md5>", tag="video"), kind="videos"))
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(folder))
    assert caught.value.path.endswith("page-3.xml") and caught.value.line == 4
    assert "(the first at page-2.xml line 4)" in caught.value.message  # was "line 31"


def test_a_folders_skipped_first_line_is_a_line_of_its_page(tmp_path):
    folder = after_a_long_first_page(tmp_path)
    write(folder, "page-2.xml", document(image("p", f"<pdna>xx</pdna><md5>{MD5_A}</md5>")))  # line 4
    skipped = load_hashlist(str(folder)).stats["skipped"]["pdna"]
    assert (skipped["first_line"], skipped["page"]) == (4, "page-2.xml")  # was 31, no page
    single = load_hashlist(str(folder / "page-2.xml")).stats["skipped"]["pdna"]
    assert single["first_line"] == 4 and "page" not in single


# 5. ncmec.pages: names whose numbers compare equal ("page-1", "page-01") keep the directory's listing
# order, which differs between file systems: which state of an entry wins, and the folder digest, vary.
def test_page_order_does_not_depend_on_the_directory_listing_order(tmp_path):
    for name in ("page-1.xml", "page-01.xml", "page-2.xml"):
        (tmp_path / name).touch()
    listing = Path.iterdir
    orders = []
    for reverse in (False, True):
        with mock.patch.object(
            Path, "iterdir", lambda self, r=reverse: iter(sorted(listing(self), reverse=r))
        ):
            orders.append([p.name for p in ncmec.pages(tmp_path)])
    assert orders[0] == orders[1]


# 6. A CSV header of 100,000 columns (a 770 KB file) takes ~1 GB in pyarrow's reader (~9 KB a column):
# 1M columns in under 8 MB would be ~10 GB. A list format needs a handful of columns.
def test_a_csv_with_a_huge_header_is_refused_before_it_is_read(tmp_path):
    columns = 100_000
    header = ",".join(["hash_type", "hash", *(f"c{i}" for i in range(columns))])
    path = write(tmp_path, "wide.csv", f"{header}\nmd5,{MD5_A}{',' * columns}\n")
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(path))
    assert caught.value.line == 1


# 7. "#" lines: every line format skips a commented-out entry; the CSV formats load it as a live entry
# (id "#e2"), so the same list text gives different entries by format.
def test_a_commented_out_csv_row_is_not_a_live_entry(tmp_path):
    path = write(tmp_path, "c.csv", f"id,hash_type,hash\ne1,md5,{MD5_A}\n#e2,md5,{MD5_B}\n")
    try:
        hash_list = load_hashlist(str(path))
    except HashListError as error:
        assert error.line == 3
        return
    entries = hash_list.entries["md5"]
    assert [entries.entry_id(i) for i in range(len(entries))] == ["e1"]


# 8. README: ncmec-csv type values are strict (md5, sha1/sha-1, sha256, pdq). It takes every registered
# type (phash, url, domain ...), while "SHA-256" (as "SHA-1" is accepted) is skipped as a type that
# needs a plug-in.
def test_ncmec_csv_type_values_are_as_documented(tmp_path):
    path = write(tmp_path, "n.csv", f"Hash Type,Hash Value,Image ID\nSHA-256,{'b' * 64},2\nMD5,{MD5_A},1\n")
    hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1, "sha256": 1}, hash_list.stats["skipped"]


def test_ncmec_csv_refuses_types_outside_its_documented_set(tmp_path):
    path = write(tmp_path, "n.csv", f"type,value,id\nmd5,{MD5_A},1\nphash,{'f' * 16},2\n")
    hash_list = load_hashlist(str(path))
    assert "phash" not in hash_list.counts


# 9. NCMEC entries are keyed (kind, id); python-threatexchange keys them by member and id: two members'
# entries with one id were one entry, the later silently replacing the earlier. Now a named error.
def test_two_members_entries_with_one_id_are_refused(tmp_path):
    text = document(
        image("5", f"<md5>{MD5_A}</md5>", member="1"), image("5", f"<md5>{MD5_B}</md5>", member="2")
    )
    path = write(tmp_path, "r.xml", text)
    with pytest.raises(HashListError, match="image id '5' is given by members 1 and 2") as caught:
        load_hashlist(str(path))
    assert caught.value.line == 5  # the second entry
    deleted = document(
        image("5", f"<md5>{MD5_A}</md5>", member="1"), image("5", "", member="2", tag="deletedImage")
    )
    with pytest.raises(HashListError, match="would delete the other's"):
        load_hashlist(str(write(tmp_path, "d.xml", deleted)))
    same_member = document(image("5", f"<md5>{MD5_A}</md5>"), image("5", f"<md5>{MD5_B}</md5>"))
    updated = load_hashlist(str(write(tmp_path, "u.xml", same_member)))  # a later state of one entry
    assert updated.counts == {"md5": 1}


def test_a_wrong_length_counts_characters_not_bytes(tmp_path):
    path = write(tmp_path, "w.txt", "\uff10" * 31 + "\n")  # full-width digits: 3 bytes each (was "93")
    with pytest.raises(HashListError, match="this has 31 characters"):
        load_hashlist(f"md5:{path}")


# A second review: ncmec-csv's own types only (above) had dropped a registered plug-in's type by its own name.
def test_ncmec_csv_takes_a_registered_plug_in_type_by_its_own_name(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text(f"hash_type,hash_value,entry_id\nmd5,{MD5_A},1\nPhotoDNA,{MD5_A},2\npdna,{'1' * 32},3\n")
    with registered(HashType("photodna", 16, "image", index="hamming", threshold=3)):
        hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1, "photodna": 2}
    assert hash_list.stats["skipped"] == {}


# ncmec._rows called hash_types outside read_pages' try: its errors (a hex-looking fingerprint element name,
# more than MAX_UNKNOWN_TYPES names) escaped as a bare FormatError: the CLI's "internal error".
@pytest.mark.parametrize(
    "fingerprints",
    [
        ["<deadbeefdeadbeef>x</deadbeefdeadbeef>"],
        [f"<t{i}>x</t{i}>" for i in range(101)],
    ],
    ids=["hex-element-name", "101-element-names"],
)
def test_an_xml_lists_type_errors_are_hash_list_errors(tmp_path, fingerprints):
    entries = [image("1", f"<md5>{MD5_A}</md5>")] + [image(str(i + 2), f) for i, f in enumerate(fingerprints)]
    path = tmp_path / "r.xml"
    path.write_text(document(*entries))
    try:
        load_hashlist(str(path))
    except HashListError as error:
        assert error.line is not None
    # a bare FormatError (ValueError) fails the test
