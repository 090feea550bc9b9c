"""A test-only plug-in module that writes a file when imported (where SCANNER_TEST_IMPORT_WRITE says)."""

from __future__ import annotations

import os
from pathlib import Path

from signal_plugins import ToySignal

Path(os.environ["SCANNER_TEST_IMPORT_WRITE"]).write_text("written at import\n")


class ImportWriterSignal(ToySignal):
    """The toy, from a module that writes on import."""

    @classmethod
    def get_name(cls) -> str:
        return "import_writer"
