"""NCMEC Hash Sharing v2 query results as lists (scanner/lists/ncmec.py): saved pages read in order, with
deletions and updates applied, fingerprint types the scanner cannot compute skipped and counted, entry
metadata kept, and a hostile document refused with a named error, never expanded."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import HashListError
from scanner.hashtypes import HashType, registered
from scanner.lists import DuplicateHashWarning, load_hashlist

PAGES = Path(__file__).parent / "fixtures" / "ncmec-pages"
HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
OPEN = '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">\n'
MD5 = "0a2b6e5f5eb3d6a7c7d6a1f3e6f7d2b1"


def image(entry_id: str, fingerprints: str, classification: str = "A1", member: str = "M") -> str:
    return (
        f'<image><member id="1">{member}</member><id>{entry_id}</id>'
        f"<classification>{classification}</classification><fingerprints>{fingerprints}</fingerprints></image>"
    )


def document(*entries: str) -> str:
    return HEAD + OPEN + "<images>\n" + "\n".join(entries) + "\n</images>\n</queryResult>\n"


def write(tmp_path: Path, text: str, name: str = "response.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def entries_of(hash_list, type_name: str) -> list[tuple[str, str | None, dict]]:
    entries = hash_list.entries[type_name]
    rows = entries.metadata.to_pylist()
    return [(entries.entry_id(i), entries.category(i), rows[i]) for i in range(len(entries))]


def test_the_first_page_alone_loads_every_inline_fingerprint_it_can_match() -> None:
    hash_list = load_hashlist(str(PAGES / "page-1.xml"))
    assert hash_list.format == "ncmec-xml"
    assert hash_list.counts == {"md5": 4, "pdq": 1, "sha1": 1}
    assert [e[:2] for e in entries_of(hash_list, "md5")] == [
        ("image-1", "A1"),
        ("image-2", "B1"),
        ("image-3", "A2"),
        ("video-1", "A1"),
    ]
    skipped = hash_list.stats["skipped"]
    assert skipped["pdna"] == {
        "entries": 2,
        "reason": "no_hasher",
        "why": "no hasher for pdna: install a plug-in",
        "first_line": 12,
    }
    assert skipped["tmk-pdqf"]["entries"] == 1 and skipped["tmk-pdqf"]["reason"] == "value_not_in_list"


def test_member_and_kind_are_entry_metadata_not_the_feedback_members() -> None:
    md5 = entries_of(load_hashlist(str(PAGES / "page-1.xml")), "md5")
    assert md5[0][2] == {"member": "Example Member", "member_id": "42", "kind": "image"}
    assert md5[3][2] == {"member": "Example Member", "member_id": "42", "kind": "video"}


def test_a_folder_of_pages_applies_deletions_and_updates_in_order() -> None:
    hash_list = load_hashlist(f"ncmec={PAGES}")
    assert (hash_list.name, hash_list.format) == ("ncmec", "ncmec-xml")
    md5 = entries_of(hash_list, "md5")
    assert [e[:2] for e in md5] == [
        ("image-1", "A1"),
        ("image-2", "A1"),
        ("video-1", "A1"),
    ]  # image-3 deleted
    assert hash_list.counts == {"md5": 3, "pdq": 1, "sha1": 1}
    assert hash_list.stats["skipped"]["pdna"]["entries"] == 2  # image-2 updated, not counted twice
    assert hash_list.size == sum(p.stat().st_size for p in PAGES.glob("*.xml"))  # the manifest's bytes


def test_pages_are_read_in_numeric_order(tmp_path: Path) -> None:
    """page-10 comes after page-2: a deletion on page 10 removes what page 2 added."""
    write(tmp_path, document(image("x", f"<md5>{MD5}</md5>")), "page-2.xml")
    deleted = HEAD + OPEN + "<images><deletedImage><id>x</id></deletedImage></images></queryResult>\n"
    write(tmp_path, deleted, "page-10.xml")
    write(tmp_path, document(image("y", f"<md5>{MD5.replace('0', 'f')}</md5>")), "page-1.xml")
    assert [e[0] for e in entries_of(load_hashlist(str(tmp_path)), "md5")] == ["y"]


def test_the_folder_digest_changes_with_any_page(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    shutil.copytree(PAGES, folder)
    before = load_hashlist(str(folder)).digest
    page = folder / "page-2.xml"
    page.write_text(page.read_text().replace("A1", "A2"))
    assert load_hashlist(str(folder)).digest != before


def test_a_malformed_fingerprint_names_its_page_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    shutil.copytree(PAGES, folder)
    write(folder, document(image("z", f"<md5>{MD5[:-1]}</md5>")), "page-3.xml")
    with pytest.raises(HashListError) as caught:
        load_hashlist(str(folder))
    assert (caught.value.path, caught.value.line) == (str(folder / "page-3.xml"), 4)
    assert "a md5 hash has 32 hex digits, this has 31" in str(caught.value)


def test_not_well_formed_xml_names_its_page_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    shutil.copytree(PAGES, folder)
    write(folder, HEAD + OPEN + "<images>\n<image><id>a</id></images>\n", "page-3.xml")
    with pytest.raises(HashListError, match="not well-formed XML") as caught:
        load_hashlist(str(folder))
    assert (caught.value.path, caught.value.line) == (str(folder / "page-3.xml"), 4)


def test_an_unknown_encoding_is_a_named_error(tmp_path: Path) -> None:
    path = write(tmp_path, document(image("e", f"<md5>{MD5}</md5>")).replace("UTF-8", "UTFR8"))
    with pytest.raises(HashListError, match="not readable XML: unknown encoding: UTFR8"):
        load_hashlist(str(path))


def test_an_entry_without_an_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, document(f"<image><fingerprints><md5>{MD5}</md5></fingerprints></image>"))
    with pytest.raises(HashListError, match="entry without an id") as caught:
        load_hashlist(str(path))
    assert caught.value.line == 4


def test_a_prefixed_namespace_reads_the_same(tmp_path: Path) -> None:
    plain = document(image("e1", f"<md5>{MD5}</md5>"))
    prefixed = re.sub(r"<(/?)(\w)", r"<\1h:\2", plain.replace("xmlns=", "xmlns:h="))
    assert "<h:queryResult xmlns:h=" in prefixed and "</h:md5>" in prefixed
    entries = load_hashlist(str(write(tmp_path, prefixed))).entries["md5"]
    assert (entries.entry_id(0), entries.category(0)) == ("e1", "A1")
    other = prefixed.replace("hashsharing/v2", "hashsharing/v3")
    with pytest.raises(HashListError, match="not an NCMEC hash sharing v2 query result"):
        load_hashlist(str(write(tmp_path, other)))


def test_another_document_is_not_a_list(tmp_path: Path) -> None:
    status = (
        HEAD
        + '<status xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><member id="1">x</member></status>'
    )
    with pytest.raises(HashListError, match="not an NCMEC hash sharing v2 query result"):
        load_hashlist(str(write(tmp_path, status)))


def test_a_response_without_entries_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HashListError, match="no entries"):
        load_hashlist(str(write(tmp_path, document())))


def test_only_fingerprints_without_a_hasher_is_refused_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, document(image("p", "<pdna>AAAA</pdna>")))
    with pytest.raises(HashListError, match="unknown hash type 'pdna' on 1 entries"):
        load_hashlist(str(path))


def test_pdna_loads_once_a_photodna_plug_in_is_registered(tmp_path: Path) -> None:
    """The registry is read at load time: python-threatexchange's PhotoDNA signal type is `photodna`."""
    path = write(tmp_path, document(image("p", f"<md5>{MD5}</md5><pdna>{'ab' * 144}</pdna>")))
    assert load_hashlist(str(path)).stats["skipped"]["pdna"]["entries"] == 1
    with registered(HashType("photodna", 144, "image", index="hamming", threshold=1000)):
        hash_list = load_hashlist(str(path))
    assert hash_list.counts == {"md5": 1, "photodna": 1} and hash_list.stats["skipped"] == {}


def test_a_type_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HashListError, match="names its own hash types"):
        load_hashlist(f"md5:{PAGES / 'page-1.xml'}")


def test_a_page_that_is_no_regular_file_is_a_named_error(tmp_path: Path) -> None:
    folder = tmp_path / "pages"
    shutil.copytree(PAGES, folder)
    (folder / "page-3.xml").mkdir()
    os.mkfifo(folder / "page-4.xml")
    with pytest.raises(HashListError, match="cannot read the list") as caught:
        load_hashlist(str(folder))
    assert caught.value.path == str(folder / "page-3.xml")
    (folder / "page-3.xml").rmdir()
    with pytest.raises(HashListError, match="cannot read the list") as caught:
        load_hashlist(str(folder))  # a FIFO is refused, not waited on
    assert caught.value.path == str(folder / "page-4.xml")


def test_a_folder_without_pages_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HashListError, match=r"a directory with no \.xml file"):
        load_hashlist(str(tmp_path))


# Hostile documents


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE queryResult [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<queryResult><images><image><id>&lol9;</id></image></images></queryResult>\n"
)
XXE = (
    '<?xml version="1.0"?>\n<!DOCTYPE queryResult [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    "<queryResult><images><image><id>&secret;</id></image></images></queryResult>\n"
)
DTD_ONLY = '<?xml version="1.0"?>\n<!DOCTYPE queryResult SYSTEM "http://127.0.0.1:9/x.dtd">\n<queryResult/>\n'


@pytest.mark.parametrize(
    "text", [BILLION_LAUGHS, XXE, DTD_ONLY], ids=["billion-laughs", "xxe", "external-dtd"]
)
def test_a_document_type_declaration_is_refused_unexpanded(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    tracemalloc.start()
    try:
        with pytest.raises(HashListError, match="refused: the document declares") as caught:
            load_hashlist(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.path == str(path) and caught.value.line == 2
    assert peak < 8 << 20  # nothing was expanded


def test_an_overlong_element_text_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, document(image("big", f"<md5>{'a' * 70_000}</md5>")))
    with pytest.raises(HashListError, match="longer than 65536 characters"):
        load_hashlist(str(path))


def test_deep_nesting_is_read_without_recursion(tmp_path: Path) -> None:
    deep = "<x>" * 50_000 + "</x>" * 50_000
    path = write(tmp_path, document(image("d", f"<md5>{MD5}</md5>").replace("<id>", deep + "<id>")))
    assert load_hashlist(str(path)).counts == {"md5": 1}


def test_a_large_response_streams_in_bounded_memory(tmp_path: Path) -> None:
    """Memory grows with the entries kept, not with the document: 2,000 entries with 40 feedback members
    each are 240,000 elements (a tree of ~70 MB); streamed, the peak stays near the file's own size."""
    feedback = "<feedback>" + "<members><member id='9'>someone</member></members>" * 40 + "</feedback>"
    entries = [
        image(f"e{i}", f"<md5>{i:032x}</md5>").replace("</image>", feedback + "</image>")
        for i in range(2_000)
    ]
    path = write(tmp_path, document(*entries))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        hash_list = load_hashlist(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert hash_list.counts == {"md5": 2_000}
    assert peak < size + (16 << 20)


SPLICES = [b"<", b">", b"&", b"<!DOCTYPE x>", b"\x00", b"\xff", b"]]>", b"<![CDATA[", b'encoding="x"']


@settings(max_examples=200, deadline=None)
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 60), st.sampled_from(SPLICES)), max_size=6))
def test_any_damaged_response_loads_or_raises_hash_list_error(edits) -> None:
    """Byte flips, cuts and splices in a saved page: entries, or one HashListError naming the file."""
    data = bytearray((PAGES / "page-1.xml").read_bytes())
    for where, size, splice in edits:
        at = int(where * (len(data) - 1))
        if size % 3 == 0:
            data[at] = size * 4 % 256
        elif size % 3 == 1:
            del data[at : at + size]
        else:
            data[at:at] = splice
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.xml"
        path.write_bytes(bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DuplicateHashWarning)
            try:
                hash_list = load_hashlist(str(path))
            except HashListError as error:
                assert error.path == str(path)
                return
    assert sum(hash_list.counts.values()) > 0
