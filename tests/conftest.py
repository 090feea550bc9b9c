"""Shared fixtures: where the workspace's reference data lives, and the CLI run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.plugins import unload_plugins

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

ScannerCli = Callable[..., subprocess.CompletedProcess]


def run_scanner(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """`python -m scanner ARGS` in a fresh process, this checkout first on the path (`env` adds or replaces
    variables, PYTHONPATH too); its output captured as text, its exit status left to the caller."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def scanner_cli() -> ScannerCli:
    """The scanner command line (see run_scanner)."""
    return run_scanner


@pytest.fixture
def url_lists() -> Path:
    """The real URL lists beside the checkout (parsing fixtures only: never fetched)."""
    path = SHARED / "url-lists"
    if not path.is_dir():
        pytest.skip(f"reference URL lists not found at {path} (a clone outside the workspace)")
    return path


@dataclass(frozen=True)
class MemoryOut:
    """An --out on fsspec's in-process memory filesystem."""

    url: str

    def files(self) -> dict[str, bytes]:
        """Every file under the URL, by path relative to it."""
        import fsspec

        filesystem, root = fsspec.core.url_to_fs(self.url)
        return {path[len(root) + 1 :]: filesystem.cat_file(path) for path in filesystem.find(root)}

    def published_reports(self, result_out: Path) -> dict[str, bytes]:
        """The reports under the URL, checked to be exactly the local staging directory's files, which a run
        must have written inside the working directory (never in a folder named after the URL)."""
        from scanner.run.mirror import local_dir

        staging = local_dir(self.url)
        assert result_out == staging and staging.is_relative_to(Path.cwd())
        assert not Path("memory:").exists()  # the URL was not taken for a relative path
        reports = {name: data for name, data in self.files().items() if not name.startswith(".units/")}
        assert reports == {path.name: path.read_bytes() for path in staging.iterdir() if path.is_file()}
        return reports


@pytest.fixture
def memory_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryOut:
    """A fresh memory:// --out, its local staging directory under tmp_path (the working directory too, where
    a URL mistaken for a relative path would show up)."""
    pytest.importorskip("fsspec", reason="fsspec is not installed (pip install .[remote])")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return MemoryOut(f"memory://reports/{tmp_path.name}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked unlimited_core run first (in their usual order): an in-process scan hardens the pytest
    process itself (core limit 0, the hard limit too), and without CAP_SYS_RESOURCE nothing raises a hard
    limit again, so their children could no longer be given an unlimited core limit to prove it is lowered."""
    items.sort(key=lambda item: item.get_closest_marker("unlimited_core") is None)


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The processes tests start keep their temporary files under pytest's own directory, not the system's:
    a unit worker a test kills leaves its hashing template's socket directory (runners/hashfork.py)."""
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmpdir"))
    yield
    if previous is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous


@pytest.fixture(autouse=True)
def no_plugins_left() -> Iterator[None]:
    """A test that builds a config with plug-ins registers their hash types in the process-wide registry;
    the next test, in any file, sees only the built-ins (hashes.parquet's columns follow the registry)."""
    yield
    unload_plugins()
