"""Holes a second hostile review of issue 14 found, tried through the real CLI, real files and processes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ScannerCli
from tests.loopback import LoopbackServer


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("how", "value"),
    [
        ("flag", "https://example.org/abuse\r\nX-Injected: 1"),  # header injection: aiohttp raised per row
        ("flag", "https://example.org/caf\u00e9"),  # httpx: UnicodeEncodeError per row
        ("toml", "scanner\nbot"),  # fetch.user_agent from a config file
        ("toml", "bot\x00"),
    ],
)
def test_a_user_agent_that_no_header_can_carry_is_a_setting_error_before_any_request(
    scanner_cli: ScannerCli, tmp_path: Path, how: str, value: str
) -> None:
    """Before: every row was `dead client_error` with a traceback printed per URL, and exit 0."""
    with LoopbackServer({"/a.jpg": _jpeg()}) as server:
        shard = tmp_path / "urls.csv"
        shard.write_text(f"url\n{server.url('/a.jpg')}\n", encoding="utf-8")
        hashes = tmp_path / "md5.txt"
        hashes.write_text("0" * 32 + "\n", encoding="utf-8")
        out = tmp_path / "out"
        args = ["scan", str(shard), "--hashlist", str(hashes), "--out", str(out), "--allow-private-networks"]
        args += ["--quiet", "--workers", "1", "--client", "httpx"]
        if how == "flag":
            args += ["--contact", value]
        else:
            config = tmp_path / "scan.toml"
            escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\x00", "\\u0000")
            config.write_text(f'[fetch]\nuser_agent = "{escaped}"\n', encoding="utf-8")
            args += ["--config", str(config)]
        result = scanner_cli(*args)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "printable ASCII" in result.stderr
        assert server.total_hits == 0
        assert not out.exists()
