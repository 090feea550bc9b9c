"""Every source kind passes SourceContract: one subclass per kind, each writing a shard of its own."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from contracts import Record, SourceContract

ROW_GROUP = 3  # small row groups, so spans both group and split them


class TestParquet(SourceContract):
    kind = "parquet"
    max_batch_rows = 8192

    def write(self, directory: Path, records: list[Record]) -> Path:
        path = directory / "urls.parquet"
        table = pa.table({"url": [r.url for r in records], "key": [r.key for r in records]})
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        return path

    def write_corrupt(self, directory: Path) -> Path:
        good = self.write(directory, [Record(f"http://h/{i}", str(i)) for i in range(100)])
        bad = directory / "bad.parquet"
        bad.write_bytes(good.read_bytes()[:-30])
        return bad


class DelimitedText(SourceContract):
    max_batch_rows = 8192
    delimiter: str

    def write(self, directory: Path, records: list[Record]) -> Path:
        buffer = io.StringIO()
        buffer.write("\ufeff")  # as Excel writes UTF-8 CSV: a byte order mark and CRLF line breaks
        writer = csv.writer(buffer, delimiter=self.delimiter, lineterminator="\r\n")
        writer.writerow(["key", "url"])
        writer.writerows([r.key, r.url] for r in records)
        path = directory / f"urls.{self.kind}"
        path.write_bytes(buffer.getvalue().encode("utf-8"))
        return path

    def write_corrupt(self, directory: Path) -> Path:
        path = directory / f"latin.{self.kind}"
        path.write_bytes(b"url\nhttp://a/1\nhttp://a/caf\xe9\n")
        return path


class TestCsv(DelimitedText):
    kind = "csv"
    delimiter = ","


class TestTsv(DelimitedText):
    kind = "tsv"
    delimiter = "\t"


class TestJsonl(SourceContract):
    kind = "jsonl"
    max_batch_rows = 8192

    def write(self, directory: Path, records: list[Record]) -> Path:
        path = directory / "urls.jsonl"
        lines = [json.dumps({"url": r.url, "key": r.key}) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def write_corrupt(self, directory: Path) -> Path:
        path = directory / "bad.jsonl"
        path.write_text('{"url": "http://a/"}\n{"url": oops}\n', encoding="utf-8")
        return path


class TestTxt(SourceContract):
    kind = "txt"
    carries_keys = False  # one URL a line
    max_batch_rows = 8192

    def write(self, directory: Path, records: list[Record]) -> Path:
        path = directory / "urls.txt"
        path.write_text("".join(f"{r.url or ''}\n" for r in records), encoding="utf-8")
        return path

    def write_corrupt(self, directory: Path) -> Path:
        path = directory / "bad.txt"
        path.write_bytes(b"http://a/1\nhttp://a/\xff\xfe\n")
        return path


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class TestWebDataset(SourceContract):
    kind = "webdataset"
    bodies = True
    max_batch_rows = 1  # one sample at a time; each sample here holds one image

    def write(self, directory: Path, records: list[Record]) -> Path:
        path = directory / "00000.tar"
        with tarfile.open(path, "w") as tar:
            for i, record in enumerate(records):
                assert record.body is not None
                add_member(tar, f"{i:05d}.jpg", record.body)
                add_member(tar, f"{i:05d}.json", json.dumps({"url": record.url, "key": record.key}).encode())
        return path

    def write_corrupt(self, directory: Path) -> Path:
        """A shard cut short inside its last image: the complete samples, then one truncated_tar row."""
        good = self.write(directory, [Record(f"http://h/{i}", str(i), b"\xff\xd8" * 300) for i in range(3)])
        data = good.read_bytes()
        good.unlink()
        bad = directory / "cut.tar"
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            last = [m for m in tar.getmembers() if m.name.endswith(".jpg")][-1]
        bad.write_bytes(data[: last.offset_data + 100])
        return bad


class TestImageParquet(SourceContract):
    kind = "parquet-images"
    bodies = True
    max_batch_rows = 32

    def write(self, directory: Path, records: list[Record]) -> Path:
        path = directory / "images.parquet"
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        cells = [{"bytes": r.body, "path": None} for r in records]
        table = pa.table(
            {
                "image": pa.array(cells, image),
                "url": [r.url for r in records],
                "key": [r.key for r in records],
            }
        )
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        return path

    def write_corrupt(self, directory: Path) -> Path:
        good = self.write(directory, [Record(f"http://h/{i}", str(i), b"\xff\xd8" * 50) for i in range(40)])
        bad = directory / "bad.parquet"
        bad.write_bytes(good.read_bytes()[:-30])
        return bad


class TestFolder(SourceContract):
    kind = "folder"
    bodies = True
    max_batch_rows = 16

    def write(self, directory: Path, records: list[Record]) -> Path:
        folder = directory / "images"
        folder.mkdir()
        for i, record in enumerate(records):
            assert record.body is not None
            (folder / f"{i:05d}.jpg").write_bytes(record.body)
            (folder / f"{i:05d}.json").write_text(json.dumps({"url": record.url, "key": record.key}))
        return folder

    def write_corrupt(self, directory: Path) -> Path:
        """A tree holding a FIFO named as an image: a not_a_regular_file row, never opened to block."""
        folder = self.write(directory, [Record(f"http://h/{i}", str(i), b"\xff\xd8" * 50) for i in range(2)])
        os.mkfifo(folder / "00002.jpg")
        return folder
