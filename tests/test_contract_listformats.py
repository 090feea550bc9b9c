"""Every hash list format passes ListFormatContract: one subclass per format (and per way of typing one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape

import pytest
from contracts import Entry, ListFormatContract, csv_line, list_entries, loaded_entries

from scanner.lists import DuplicateHashWarning, ncmec
from scanner.lists.formats import FORMATS
from scanner.lists.hashtypes import LIST_TYPE_NAMES


class TestCanonicalCsv(ListFormatContract):
    format_name = "csv"
    types = tuple(LIST_TYPE_NAMES)  # every listable type, hex and text
    ids = categories = True
    garbage = "md5"  # one field where the header has four

    def header(self) -> list[str]:
        return ["id,hash_type,hash,category"]

    def line(self, entry: Entry) -> str:
        return csv_line([entry.id or "", entry.hash_type, entry.text, entry.category or ""])


class TestNcmecCsv(ListFormatContract):
    format_name = "ncmec-csv"
    types = ("md5", "sha1", "sha256", "pdq")
    ids = categories = True
    garbage = '"unterminated,md5'
    spelled: ClassVar = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA256", "pdq": "PDQ"}

    def header(self) -> list[str]:
        return ["Record ID,Hash Value,Hash Algorithm,Classification"]

    def line(self, entry: Entry) -> str:
        return csv_line([entry.id or "", entry.text, self.spelled[entry.hash_type], entry.category or ""])


class TestThreatExchange(ListFormatContract):
    format_name = "threatexchange"
    types = ("pdq", "md5", "url", "url_md5")
    garbage = "pdq 0 1"
    signals: ClassVar = {"pdq": "pdq", "md5": "photo_md5", "url": "url", "url_md5": "url_md5"}

    def line(self, entry: Entry) -> str:
        return f"{self.signals[entry.hash_type]} {entry.text}"


class TestThreatExchangeCsv(ListFormatContract):
    """`threatexchange dataset -P --csv` as pytx writes it (tests/test_threatexchange_lists.py runs pytx)."""

    format_name = "threatexchange-csv"
    types = ("pdq", "md5", "sha256", "url", "url_md5")
    categories = True
    garbage = "pdq,0,1"
    signals: ClassVar = {
        "pdq": "pdq",
        "md5": "video_md5",
        "sha256": "video_sha256",
        "url": "url",
        "url_md5": "url_md5",
    }

    def header(self) -> list[str]:
        return ["signal_type,signal_str,collab,category,tags"]

    def line(self, entry: Entry) -> str:
        return csv_line([self.signals[entry.hash_type], entry.text, "Contract Collab", entry.category, "a b"])


class TestNcmecXml(ListFormatContract):
    """An NCMEC hash sharing v2 query result, one entry a line (pages, deletions: test_ncmec_lists.py)."""

    format_name = "ncmec-xml"
    types = ("md5", "sha1", "pdq")
    ids = categories = True
    garbage = "<image><id>bad</id><fingerprints><md5>00</fingerprints></image>"

    def text(self, lines: list[str]) -> str:
        head = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<!-- list format contract -->'
        root = f'<queryResult xmlns="{ncmec.NAMESPACE}">'
        return "\n".join([head, root, '<images count="0">', *lines, "</images>", "</queryResult>"]) + "\n"

    def line(self, entry: Entry) -> str:
        return (
            f'<image><member id="1">M</member><id>{escape(entry.id or "")}</id>'
            f"<classification>{escape(entry.category or '')}</classification>"
            f"<fingerprints><{entry.hash_type}>{entry.text}</{entry.hash_type}></fingerprints></image>"
        )

    def test_duplicates_merged_into_the_first_entry(self, tmp_path: Path) -> None:
        """An id given again is the entry's newer state (it replaces it); the same hash under another id is
        a repeat, merged into the first."""
        entries = list_entries(self.types)
        unique = self.load(self.write(tmp_path, "unique.xml", self.text([self.line(e) for e in entries])))
        again = replace(entries[0], text=entries[0].text.upper(), id="another id")
        path = self.write(tmp_path, "list.xml", self.text([self.line(e) for e in [*entries, again]]))
        with pytest.warns(DuplicateHashWarning, match=rf"1 repeated {entries[0].hash_type} hash"):
            merged = self.load(path)
        assert merged.duplicates_merged == 1
        assert loaded_entries(merged) == loaded_entries(unique)
        updated = replace(entries[0], category="newer")
        path = self.write(tmp_path, "updated.xml", self.text([self.line(e) for e in [*entries, updated]]))
        first = loaded_entries(self.load(path))[entries[0].hash_type][0]
        assert first[1:] == (entries[0].id, "newer")


class TestPdqHashio(ListFormatContract):
    format_name = "pdq-hashio"
    types = ("pdq",)
    ids = True
    garbage = "hash=not-a-pdq-hash,x"

    def line(self, entry: Entry) -> str:
        return f"hash={entry.text},{entry.id}"


class TestPlainTextByLength(ListFormatContract):
    format_name = "text"
    types = ("md5",)  # 32 hex digits: no TYPE: needed
    garbage = "not hex at all"

    def line(self, entry: Entry) -> str:
        return entry.text


class TestPlainTextTyped(TestPlainTextByLength):
    types = ("phash",)
    spec_type = "phash"


class TestPlainTextUrls(TestPlainTextByLength):
    types = ("url",)
    spec_type = "url"
    garbage = "ftp://example.com/file"


def test_every_format_has_a_contract_subclass() -> None:
    def subclasses(cls: type) -> set[type]:
        return {sub for direct in cls.__subclasses__() for sub in {direct} | subclasses(direct)}

    covered = {cls.format_name for cls in subclasses(ListFormatContract)}
    assert covered == {list_format.name for list_format in FORMATS} | {ncmec.NAME}
