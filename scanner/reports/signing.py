"""Signed reports: an Ed25519 signature over the exact bytes of manifest.json, in manifest.json.sig beside it.

manifest.json lists the SHA-256 of every report file, so a signature over it vouches for all of them: `verify`
checks the signature (who), then the digests (what), then the schema. Format of manifest.json.sig (JSON):

    {"format": "scanner-signature/1", "algorithm": "ed25519", "signed_file": "manifest.json",
     "manifest_sha256": "<hex>", "key_fingerprint": "sha256:<hex>", "signature": "<base64, 64 bytes>"}

Only `signature` is checked cryptographically; `key_fingerprint` (SHA-256 of the raw 32-byte public key) and
`manifest_sha256` only make the failure messages precise (wrong key; manifest changed since it was signed).
Keys are PEM: PKCS#8 private keys (optionally encrypted, passphrase from $SCANNER_KEY_PASSPHRASE) and
SubjectPublicKeyInfo public keys, as `scanner keygen` writes them (and `openssl genpkey -algorithm ed25519`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scanner.errors import KeyFileError, SignatureError
from scanner.regularfile import NotRegularFileError, open_regular
from scanner.reports.files import FILE_MODE, atomic_open, write_json
from scanner.reports.verify import MANIFEST, SIGNATURE

FORMAT = "scanner-signature/1"
ALGORITHM = "ed25519"
PASSPHRASE_ENV = "SCANNER_KEY_PASSPHRASE"
MAX_KEY_BYTES = 64 * 1024  # a PEM key is a few hundred bytes; never read /dev/zero or a disk image whole
PUBLIC_MODE = 0o644
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


class PemLabel(str, Enum):
    PRIVATE = "PRIVATE KEY"
    ENCRYPTED = "ENCRYPTED PRIVATE KEY"
    PUBLIC = "PUBLIC KEY"


@dataclass(frozen=True, slots=True)
class Signed:
    signature: Path
    fingerprint: str


def fingerprint(key: Ed25519PublicKey) -> str:
    """sha256:<hex> of the raw 32-byte public key (what keygen prints and the signature file names)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_keypair(out: str | Path) -> tuple[Path, Path, str]:
    """Write a new private key to OUT (PKCS#8 PEM, 0600, encrypted when $SCANNER_KEY_PASSPHRASE is set) and
    its public key to OUT.pub (0644); never over an existing file. Returns both paths and the fingerprint."""
    private_path, public_path = Path(out), Path(f"{out}.pub")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise KeyFileError(path, "already exists; keygen never replaces a key (choose another --out)")
    if not private_path.parent.is_dir():
        raise KeyFileError(private_path, f"{private_path.parent} is not a directory; create it first")
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, FILE_MODE)
    _write_new(public_path, public_pem, PUBLIC_MODE)
    return private_path, public_path, fingerprint(key.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
    except OSError as exc:
        raise KeyFileError(path, f"cannot write ({exc.strerror})") from exc


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file only its owner can read (refused otherwise, as ssh does)."""
    data, mode = _read_key_file(path)
    label = _pem_label(path, data)
    if label == PemLabel.PUBLIC:
        raise KeyFileError(path, "holds a public key; sign needs the private key (the file without .pub)")
    if label not in (PemLabel.PRIVATE, PemLabel.ENCRYPTED):
        raise KeyFileError(path, _foreign_pem(label))
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(
            path,
            f"refused: the private key is readable by group or others (mode {stat.S_IMODE(mode):04o}), "
            f"so a signature made with it proves nothing; run: chmod 600 {path}",
        )
    password = None
    if label == PemLabel.ENCRYPTED:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if not passphrase:
            raise KeyFileError(path, f"the key is encrypted: put its passphrase in ${PASSPHRASE_ENV}")
        password = passphrase.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        wrong = label == PemLabel.ENCRYPTED and "password" in str(exc).lower()
        raise KeyFileError(
            path, f"wrong passphrase in ${PASSPHRASE_ENV}" if wrong else f"not a readable PEM key ({exc})"
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(path, f"not a key this scanner can use ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"{_kind(key)} key, not Ed25519; make one with: scanner keygen --out KEY")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) file."""
    data, _mode = _read_key_file(path)
    label = _pem_label(path, data)
    if label in (PemLabel.PRIVATE, PemLabel.ENCRYPTED):
        raise KeyFileError(path, "holds a private key; --public-key takes the public key (KEY.pub)")
    if label != PemLabel.PUBLIC:
        raise KeyFileError(path, _foreign_pem(label))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(path, f"not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"{_kind(key)} key, not Ed25519; the reports are signed with Ed25519 keys")
    return key


def _read_key_file(path: str | Path) -> tuple[bytes, int]:
    """The key file's bytes (bounded) and its mode; only a regular file is read (regularfile.open_regular, as
    for every input: a FIFO, device or socket named as the key is refused before any read)."""
    try:
        with open_regular(os.fspath(path)) as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError as exc:
        raise KeyFileError(path, "no such key file") from exc
    except NotRegularFileError as exc:
        if exc.kind == "a directory":
            raise KeyFileError(path, "is a directory; pass the key file itself") from exc
        raise KeyFileError(path, f"not a regular file ({exc.kind}); pass the key file itself") from exc
    except OSError as exc:
        raise KeyFileError(path, f"cannot read ({exc.strerror})") from exc
    if len(data) > MAX_KEY_BYTES:
        raise KeyFileError(path, f"over {MAX_KEY_BYTES} bytes: not a PEM key file")
    return data, info.st_mode


def _pem_label(path: str | Path, data: bytes) -> str:
    found = _PEM_LABEL.search(data)
    if found is None:
        raise KeyFileError(path, "not a PEM key file (no -----BEGIN ...----- line); see scanner keygen")
    return found.group(1).decode("ascii")


def _foreign_pem(label: str) -> str:
    return f"a PEM {label!r}, not a PKCS#8 or SubjectPublicKeyInfo Ed25519 key; make one with scanner keygen"


def _kind(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "other"


def sign_report(out_dir: str | Path, key_path: str | Path) -> Signed:
    """Sign DIR/manifest.json's exact bytes with the private key; write DIR/manifest.json.sig (0600)."""
    out = Path(out_dir)
    key = load_private_key(key_path)
    manifest = _read_manifest(out)
    public = key.public_key()
    record = {
        "format": FORMAT,
        "algorithm": ALGORITHM,
        "signed_file": MANIFEST,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "key_fingerprint": fingerprint(public),
        "signature": base64.b64encode(key.sign(manifest)).decode("ascii"),
    }
    write_json(out / SIGNATURE, record)
    return Signed(out / SIGNATURE, record["key_fingerprint"])


def verify_signature(out_dir: str | Path, public_key_path: str | Path) -> str:
    """Check DIR/manifest.json.sig against DIR/manifest.json and the public key; one line saying who signed.

    Raises KeyFileError for an unusable key, SignatureError when the signature does not hold."""
    out = Path(out_dir)
    key = load_public_key(public_key_path)
    manifest = _read_manifest(out)
    record = _read_signature(out)
    expected = fingerprint(key)
    if record["key_fingerprint"] != expected:
        raise SignatureError(
            out / SIGNATURE,
            f"signed by key {record['key_fingerprint']}, not by {public_key_path} ({expected})",
        )
    try:
        key.verify(record["signature"], manifest)
    except InvalidSignature:
        if hashlib.sha256(manifest).hexdigest() != record["manifest_sha256"]:
            raise SignatureError(
                out / MANIFEST, "changed since it was signed: the signature does not match it"
            ) from None
        raise SignatureError(
            out / SIGNATURE, "the signature is not valid for manifest.json (the signature was altered)"
        ) from None
    return f"signature OK: {out / MANIFEST} signed by key {expected} ({public_key_path})"


def signature_is_stale(out_dir: str | Path) -> bool:
    """Whether DIR holds a signature made over a manifest.json other than today's (after `scanner report`)."""
    out = Path(out_dir)
    if not (out / SIGNATURE).exists():
        return False
    try:
        record = _read_signature(out)
    except SignatureError:
        return True
    return hashlib.sha256(_read_manifest(out)).hexdigest() != record["manifest_sha256"]


def _read_manifest(out: Path) -> bytes:
    path = out / MANIFEST
    if not out.is_dir():
        raise SignatureError(out, "not a directory; pass a finished scan's report directory")
    try:
        with open_regular(str(path)) as handle:  # a FIFO planted as the manifest would hang a plain read
            return handle.read()
    except FileNotFoundError as exc:
        raise SignatureError(path, "no such file; is this a finished scan's directory?") from exc
    except NotRegularFileError as exc:
        raise SignatureError(path, f"not a regular file ({exc.kind})") from exc
    except OSError as exc:
        raise SignatureError(path, f"cannot read ({exc.strerror})") from exc


def _read_signature(out: Path) -> dict:
    path = out / SIGNATURE
    try:
        with open_regular(str(path)) as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError as exc:
        raise SignatureError(
            path, "no signature: this directory was never signed (scanner sign DIR --key KEY)"
        ) from exc
    except NotRegularFileError as exc:
        raise SignatureError(path, f"not a regular file ({exc.kind})") from exc
    except OSError as exc:
        raise SignatureError(path, f"cannot read ({exc.strerror})") from exc
    try:
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        if record.get("algorithm") != ALGORITHM or record.get("signed_file") != MANIFEST:
            raise ValueError(f"not an {ALGORITHM} signature of {MANIFEST}")
        signature = base64.b64decode(record["signature"], validate=True)
        if len(signature) != 64 or not all(isinstance(record[k], str) for k in _TEXT_FIELDS):
            raise ValueError("malformed fields")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(path, f"not a scanner signature file ({exc})") from exc
    return {**record, "signature": signature}


_TEXT_FIELDS = ("manifest_sha256", "key_fingerprint")
