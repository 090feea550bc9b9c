"""The docs name tests as evidence: each one named must exist, or the claim beside it is unsupported."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

DOCS_NAMING_TESTS = {"docs/hostile-input.md": 50, "docs/scheduling.md": 5}  # doc -> fewest it names
# `module::test_name` means tests/test_module.py, function test_name.
TEST_REFERENCE = re.compile(r"`(\w+)::(test_\w+)")


@pytest.mark.parametrize("doc", DOCS_NAMING_TESTS)
def test_every_test_a_doc_names_exists(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    named = set(TEST_REFERENCE.findall(text))
    assert len(named) > DOCS_NAMING_TESTS[doc], f"{doc} names too few tests: the pattern no longer matches"
    missing = []
    for module, name in sorted(named):
        path = REPO / "tests" / f"test_{module}.py"
        source = path.read_text(encoding="utf-8") if path.exists() else ""
        if not re.search(rf"^\s*(async )?def {name}\(", source, re.MULTILINE):
            missing.append(f"{module}::{name}")
    assert not missing, f"{doc} names tests that do not exist: {missing}"
