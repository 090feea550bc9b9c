"""The tests' image factory: the demo's deterministic pictures (scanner/cli/pictures.py), drawn without the
demo command, which sits at the top of the package beside the command line."""

from __future__ import annotations

from scanner.cli.pictures import encode, make_image

__all__ = ["encode", "make_image"]
