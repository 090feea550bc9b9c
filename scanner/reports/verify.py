"""scanner verify: do a scan's files still match manifest.json, does summary.json follow its schema, and do
the reports agree with each other?"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scanner.errors import InputError
from scanner.regularfile import NotRegularFileError, open_regular, read_capped
from scanner.reports.consistency import consistency_problems
from scanner.reports.files import sha256_file

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"  # scanner.reports.signing: signs the manifest, so not listed in it
REQUIRED = ("outcomes.parquet", "matches.jsonl", "evidence.jsonl", "summary.json")
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_JSON_BYTES = 64 << 20  # summary.json and manifest.json are kilobytes; a larger one is not the scanner's
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@dataclass(slots=True)
class Verification:
    """What verify found: problems fail the check; notes (files the manifest does not list) do not."""

    out_dir: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """A human-readable verdict, problems first."""
        verdict = (
            f"OK: {self.checked} files match {self.out_dir / MANIFEST}; summary.json follows its schema; "
            "outcomes, matches and summary agree"
            if self.ok
            else f"FAILED: {len(self.problems)} problem(s) in {self.out_dir}"
        )
        return [verdict, *(f"  {p}" for p in self.problems), *(f"  note: {n}" for n in self.notes)]


def verify_report(out_dir: str | Path) -> Verification:
    """Recompute every listed file's SHA-256, then check summary.json's schema and totals against the data,
    and the reports against each other (scanner.reports.consistency)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(str(out), "not a directory")
    result = Verification(out)
    files = _listed_files(out, result)
    for name, expected in sorted(files.items()):
        _check_file(out, name, expected, result)
    _note_unlisted(out, files, result)
    result.problems.extend(f"manifest: does not list {name}" for name in REQUIRED if name not in files)
    if (out / "summary.json").is_file():
        _check_summary(out, result)
    result.problems.extend(consistency_problems(out))
    return result


def _listed_files(out: Path, result: Verification) -> dict[str, str]:
    """The manifest's {name: sha256}; malformed entries (a name with a path, a bad digest) are problems."""
    try:
        with open_regular(str(out / MANIFEST)) as handle:  # a FIFO planted there would hang a plain read
            body = read_capped(handle, MAX_JSON_BYTES)
        if body is None:
            too_big = f"larger than {MAX_JSON_BYTES >> 20} MiB; not a scan's manifest"
            raise InputError(str(out / MANIFEST), too_big)
        manifest = json.loads(body.decode("utf-8"))
    except NotRegularFileError as exc:
        raise InputError(str(out / MANIFEST), f"not a regular file ({exc.kind})") from exc
    except OSError as exc:
        raise InputError(str(out / MANIFEST), f"cannot read ({exc.strerror})") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(str(out / MANIFEST), f"not valid JSON ({exc})") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise InputError(str(out / MANIFEST), 'no "files" object naming the report files and their SHA-256')
    good = {}
    for name, digest in files.items():
        if not _plain_name(name):
            result.problems.append(f"manifest: {name!r} is not a plain file name in the report directory")
        elif not isinstance(digest, str) or not HEX64.fullmatch(digest):
            result.problems.append(f"manifest: {name}: {digest!r} is not a SHA-256 in lower-case hex")
        else:
            good[name] = digest
    return good


def _plain_name(name: str) -> bool:
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and name != MANIFEST
    )


def _check_file(out: Path, name: str, expected: str, result: Verification) -> None:
    path = out / name
    if not path.is_file():
        result.problems.append(f"missing: {name}")
        return
    result.checked += 1
    actual = sha256_file(path)
    if actual != expected:
        result.problems.append(f"changed: {name} (manifest sha256 {expected}, file now {actual})")


def _note_unlisted(out: Path, files: dict[str, str], result: Verification) -> None:
    for path in sorted(out.iterdir()):
        if (
            path.is_file()
            and not path.name.startswith(".")
            and path.name not in files
            and path.name not in (MANIFEST, SIGNATURE)
        ):
            result.notes.append(f"not in the manifest: {path.name}")


def _check_summary(out: Path, result: Verification) -> None:
    path = out / "summary.json"
    try:
        with open_regular(path) as handle:  # a FIFO would hang a plain read, /dev/zero never end
            body = read_capped(handle, MAX_JSON_BYTES)
        if body is None:
            raise ValueError(f"larger than {MAX_JSON_BYTES >> 20} MiB")
        summary = json.loads(body.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        result.problems.append(f"summary.json: unreadable ({exc})")
        return
    errors = validate(summary, summary_schema())
    result.problems.extend(f"summary.json: {e}" for e in errors)
    if not errors:
        result.problems.extend(f"summary.json: {e}" for e in _count_mismatches(out, summary))


def _count_mismatches(out: Path, summary: dict) -> list[str]:
    """Compare the summary's totals with outcomes.parquet and matches.jsonl, so an edited figure shows."""
    problems = []
    outcomes = _outcome_counts(out / "outcomes.parquet")
    if outcomes is not None:
        if summary["rows"] != sum(outcomes.values()):
            problems.append(f"rows is {summary['rows']} but outcomes.parquet has {sum(outcomes.values())}")
        for name in sorted(set(outcomes) | set(summary["outcomes"])):
            said = summary["outcomes"].get(name, 0)
            if said != outcomes[name]:
                problems.append(f"outcomes.{name} is {said} but outcomes.parquet has {outcomes[name]}")
    matches = out / "matches.jsonl"
    if matches.is_file():
        with open_regular(matches) as handle:
            lines = sum(1 for line in handle if line.strip())
        if summary["matches"]["total"] != lines:
            problems.append(
                f"matches.total is {summary['matches']['total']} but matches.jsonl has {lines} lines"
            )
    return problems


def _outcome_counts(path: Path) -> Counter | None:
    if not path.is_file():
        return None
    counts: Counter = Counter()
    try:
        for batch in pq.ParquetFile(path).iter_batches(columns=["outcome"]):
            table = pa.Table.from_batches([batch]).group_by(["outcome"]).aggregate([([], "count_all")])
            counts.update(
                dict(zip(table["outcome"].to_pylist(), table["count_all"].to_pylist(), strict=True))
            )
    except (OSError, pa.ArrowException):
        return None
    return counts


def summary_schema() -> dict:
    """The JSON Schema of summary.json shipped with the package."""
    return json.loads(resources.files("scanner").joinpath("schemas/summary.schema.json").read_text("utf-8"))


def validate(value: object, schema: dict, root: dict | None = None, where: str = "$") -> list[str]:
    """Check value against the JSON Schema subset summary.schema.json uses; return the errors found.

    Supported: type, const, enum, required, properties, additionalProperties, items, minimum, maximum,
    pattern and local $ref ("#/$defs/NAME"). Any other keyword is refused, so the schema cannot silently
    outgrow this validator.
    """
    root = root if root is not None else schema
    unknown = set(schema) - set(CHECKS) - ANNOTATIONS - {"$ref"}
    if unknown:
        raise ValueError(f"schema at {where} uses unsupported keyword(s): {', '.join(sorted(unknown))}")
    if "$ref" in schema:
        return validate(value, _resolve(root, schema["$ref"]), root, where)
    errors: list[str] = []
    for keyword, check in CHECKS.items():
        if keyword in schema:
            errors.extend(check(value, schema, root, where))
            if errors and keyword == "type":
                break
    return errors


def _resolve(root: dict, ref: str) -> dict:
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"unsupported $ref {ref!r}: only local #/$defs/NAME")
    return root["$defs"][ref.removeprefix("#/$defs/")]


def _type(value: object, schema: dict, root: dict, where: str) -> list[str]:
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for name in names:
        if isinstance(value, JSON_TYPES[name]) and not (
            isinstance(value, bool) and name in ("integer", "number")
        ):
            return []
    return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__}"]


def _const(value: object, schema: dict, root: dict, where: str) -> list[str]:
    return [] if value == schema["const"] else [f"{where}: must be {schema['const']!r}, got {value!r}"]


def _enum(value: object, schema: dict, root: dict, where: str) -> list[str]:
    return [] if value in schema["enum"] else [f"{where}: {value!r} is not one of {schema['enum']!r}"]


def _required(value: object, schema: dict, root: dict, where: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [f"{where}: missing {name!r}" for name in schema["required"] if name not in value]


def _properties(value: object, schema: dict, root: dict, where: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    errors = []
    for name, sub in schema["properties"].items():
        if name in value:
            errors.extend(validate(value[name], sub, root, f"{where}.{name}"))
    return errors


def _additional(value: object, schema: dict, root: dict, where: str) -> list[str]:
    if not isinstance(value, dict):
        return []
    extra = [name for name in value if name not in schema.get("properties", {})]
    rule = schema["additionalProperties"]
    if rule is False:
        return [f"{where}: unexpected {name!r}" for name in extra]
    if rule is True:
        return []
    return [e for name in extra for e in validate(value[name], rule, root, f"{where}.{name}")]


def _items(value: object, schema: dict, root: dict, where: str) -> list[str]:
    if not isinstance(value, list):
        return []
    return [e for i, item in enumerate(value) for e in validate(item, schema["items"], root, f"{where}[{i}]")]


def _minimum(value: object, schema: dict, root: dict, where: str) -> list[str]:
    bad = _is_number(value) and value < schema["minimum"]
    return [f"{where}: {value} is below {schema['minimum']}"] if bad else []


def _maximum(value: object, schema: dict, root: dict, where: str) -> list[str]:
    bad = _is_number(value) and value > schema["maximum"]
    return [f"{where}: {value} is above {schema['maximum']}"] if bad else []


def _pattern(value: object, schema: dict, root: dict, where: str) -> list[str]:
    bad = isinstance(value, str) and not re.search(schema["pattern"], value)
    return [f"{where}: {value!r} does not match {schema['pattern']}"] if bad else []


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CHECKS = {
    "type": _type,
    "const": _const,
    "enum": _enum,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional,
    "items": _items,
    "minimum": _minimum,
    "maximum": _maximum,
    "pattern": _pattern,
}
