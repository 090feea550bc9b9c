"""Every hash list format passes ListFormatContract: one subclass per format (and per way of typing one)."""

from __future__ import annotations

from typing import ClassVar

from contracts import Entry, ListFormatContract, csv_line

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
    assert covered == {list_format.name for list_format in FORMATS}
