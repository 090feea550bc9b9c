"""Run img2dataset 1.47 on a folder of URL shards, bare (dummy writer) or with the hashing writer.

    python benchmarks/run_img2dataset.py SHARDS OUT --writer dummy|hashing [--processes 2] [--threads 32]

img2dataset's download() picks its writer by output_format; for `hashing` the dummy writer's name is
pointed at i2d_writer.HashingWriter, so everything else (reader, downloader, distributor, logger) is
img2dataset's own code path. Re-encoding, EXIF extraction and its own SHA-256 are off: the writer does
all the work a hashing sink needs and no more.
"""

from __future__ import annotations

import argparse
import importlib
import os

os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations (an img2dataset import) would call PyPI
i2d_main = importlib.import_module("img2dataset.main")  # the package's `main` attribute is a function

from i2d_writer import HashingWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("shards")
    parser.add_argument("out")
    parser.add_argument("--writer", choices=["dummy", "hashing"], required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=2500, help="img2dataset samples per shard")
    args = parser.parse_args()
    if args.writer == "hashing":
        i2d_main.DummySampleWriter = HashingWriter
    i2d_main.download(
        url_list=args.shards,
        output_folder=args.out,
        input_format="parquet",
        url_col="URL",
        caption_col="TEXT",
        output_format="dummy",
        processes_count=args.processes,
        thread_count=args.threads,
        number_sample_per_shard=args.shard_size,
        disable_all_reencoding=True,
        extract_exif=False,
        compute_hash=None,
        timeout=10,
        retries=0,
        enable_wandb=False,
    )


if __name__ == "__main__":
    main()
