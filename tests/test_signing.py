"""Signed reports through the real CLI: keygen, sign, verify --public-key, and every forgery and unusable key
file told apart in one line with exit status 1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_scanner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from report_builder import build_report

PASSPHRASE = "SCANNER_KEY_PASSPHRASE"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = run_scanner(*args, env={PASSPHRASE: "", **(env or {})}, timeout=60)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def failure(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command printed (stdout for a failed check, stderr for an error)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding `signer` and `other` key pairs made by `scanner keygen`."""
    directory = tmp_path_factory.mktemp("keys")
    for name in ("signer", "other"):
        made = cli("keygen", "--out", str(directory / name))
        assert made.returncode == 0, made.stderr
    return directory


@pytest.fixture(scope="module")
def signed_template(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    built = build_report(tmp_path_factory.mktemp("report"))
    manifest = (built.out / "manifest.json").read_bytes()
    signed = cli("sign", str(built.out), "--key", str(keys / "signer"))
    assert signed.returncode == 0, signed.stderr
    assert (built.out / "manifest.json").read_bytes() == manifest  # signing leaves the manifest as it was
    return built.out


@pytest.fixture
def signed(tmp_path: Path, signed_template: Path) -> Path:
    """A fresh copy of a signed report directory, for one test to damage."""
    return Path(shutil.copytree(signed_template, tmp_path / "signed"))


def test_keygen_writes_a_private_pkcs8_key_and_a_public_key(keys: Path) -> None:
    private, public = keys / "signer", keys / "signer.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    again = cli("keygen", "--out", str(private))
    assert "already exists" in failure(again)
    assert (
        key.private_bytes_raw()
        == serialization.load_pem_private_key(private.read_bytes(), None).private_bytes_raw()
    )


def test_a_signed_report_verifies_with_its_public_key(signed: Path, keys: Path) -> None:
    result = cli("verify", str(signed), "--public-key", str(keys / "signer.pub"))
    assert result.returncode == 0, result.stdout + result.stderr
    first, second, *rest = result.stdout.splitlines()
    assert first.startswith(f"signature OK: {signed / 'manifest.json'} signed by key sha256:")
    assert second.startswith("OK: 5 files match")
    assert not any("manifest.json.sig" in line for line in rest)  # not taken for an unlisted report file
    assert "integrity, not origin" not in result.stdout


def test_verify_without_a_key_says_it_checks_integrity_not_origin(tmp_path: Path) -> None:
    result = cli("verify", str(build_report(tmp_path).out))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK: ")
    assert [line for line in lines if "integrity, not origin" in line] == [lines[-1]]


def test_the_signature_file_follows_its_documented_format(signed: Path, keys: Path) -> None:
    """Checked here with cryptography directly, from the documented fields only."""
    path = signed / "manifest.json.sig"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text(encoding="utf-8"))
    manifest = (signed / "manifest.json").read_bytes()
    public = serialization.load_pem_public_key((keys / "signer.pub").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert record["format"] == "scanner-signature/1" and record["algorithm"] == "ed25519"
    assert record["signed_file"] == "manifest.json"
    assert record["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert record["key_fingerprint"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    public.verify(base64.b64decode(record["signature"]), manifest)  # raises if not over the exact bytes


def _flip_signature(directory: Path) -> None:
    path = directory / "manifest.json.sig"
    record = json.loads(path.read_text())
    signature = bytearray(base64.b64decode(record["signature"]))
    signature[10] ^= 0x01
    record["signature"] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(record))


def _edit_manifest(directory: Path) -> None:
    """What a forger does: change a report file and record its new digest in the manifest."""
    with open(directory / "matches.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"shard": "x", "row": 0}\n')
    manifest = json.loads((directory / "manifest.json").read_text())
    digest = hashlib.sha256((directory / "matches.jsonl").read_bytes()).hexdigest()
    manifest["files"]["matches.jsonl"] = digest
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _edit_report(directory: Path) -> None:
    with open(directory / "evidence.jsonl", "a", encoding="utf-8") as handle:
        handle.write("\n")


def _resign_with_other(directory: Path, keys: Path) -> None:
    assert cli("sign", str(directory), "--key", str(keys / "other")).returncode == 0


FORGERIES = {
    "missing_signature": (lambda d, k: (d / "manifest.json.sig").unlink(), "no signature"),
    "bad_signature": (lambda d, k: _flip_signature(d), "the signature is not valid for manifest.json"),
    "not_a_signature_file": (
        lambda d, k: (d / "manifest.json.sig").write_text("hello"),
        "not a scanner signature file",
    ),
    "wrong_key": (_resign_with_other, "signed by key sha256:"),
    "tampered_manifest": (lambda d, k: _edit_manifest(d), "manifest.json: changed since it was signed"),
    "tampered_report_file": (lambda d, k: _edit_report(d), None),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_each_forgery_fails_verify_with_exit_1(signed: Path, keys: Path, case: str) -> None:
    damage, message = FORGERIES[case]
    damage(signed, keys)
    result = cli("verify", str(signed), "--public-key", str(keys / "signer.pub"))
    if message is None:  # the signature holds; the digest does not: signature line, then the verdict
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert lines[0].startswith("signature OK") and lines[1].startswith("FAILED: 1 problem(s)")
        assert lines[2].strip().startswith("changed: evidence.jsonl")
        return
    line = failure(result)
    assert line.startswith("FAILED: ") and message in line
    assert str(signed) in line


def _rsa_pem(directory: Path, private: bool) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return _write_key(directory / ("rsa" if private else "rsa.pub"), key, private)


def _ec_pem(directory: Path, private: bool) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    return _write_key(directory / ("ec" if private else "ec.pub"), key, private)


def _write_key(path: Path, key, private: bool) -> Path:
    data = (
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if private
        else key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _open_copy(directory: Path, keys: Path) -> Path:
    path = directory / "open"
    shutil.copy(keys / "signer", path)
    path.chmod(0o640)
    return path


def _text(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _der(directory: Path, keys: Path) -> Path:
    key = serialization.load_pem_private_key((keys / "signer").read_bytes(), None)
    data = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _text(directory, "der", data)


def _fifo(directory: Path) -> Path:
    os.mkfifo(directory / "fifo", 0o600)
    return directory / "fifo"


def _socket(directory: Path) -> Path:
    """A Unix socket (bound by a relative name: a socket path must stay under 108 bytes)."""
    cwd = os.getcwd()
    with socket.socket(socket.AF_UNIX) as server:
        os.chdir(directory)
        try:
            server.bind("socket")
        finally:
            os.chdir(cwd)
    return directory / "socket"


BAD_KEYS = {  # (command, key file maker, what the one line says)
    "sign_missing_file": ("sign", lambda d, k: d / "absent", "no such key file"),
    "sign_directory": ("sign", lambda d, k: d, "is a directory"),
    "sign_not_pem": ("sign", lambda d, k: _text(d, "notes.txt", b"just some text\n"), "not a PEM key file"),
    "sign_der": ("sign", _der, "not a PEM key file"),
    "sign_fifo": ("sign", lambda d, k: _fifo(d), "not a regular file (a FIFO)"),
    "sign_socket": ("sign", lambda d, k: _socket(d), "not a regular file (a socket or device)"),
    "sign_device": ("sign", lambda d, k: Path("/dev/zero"), "not a regular file (a character device)"),
    "sign_rsa": ("sign", lambda d, k: _rsa_pem(d, True), "RSA key, not Ed25519"),
    "sign_ec": ("sign", lambda d, k: _ec_pem(d, True), "not Ed25519"),
    "sign_public_key": ("sign", lambda d, k: k / "signer.pub", "holds a public key"),
    "sign_group_readable": ("sign", _open_copy, "refused: the private key is readable by group or others"),
    "sign_certificate": (
        "sign",
        lambda d, k: _text(d, "cert.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "a PEM 'CERTIFICATE'",
    ),
    "verify_missing_file": ("verify", lambda d, k: d / "absent.pub", "no such key file"),
    "verify_not_pem": ("verify", lambda d, k: _text(d, "x.pub", b"\x00\x01binary"), "not a PEM key file"),
    "verify_rsa": ("verify", lambda d, k: _rsa_pem(d, False), "RSA key, not Ed25519"),
    "verify_socket": ("verify", lambda d, k: _socket(d), "not a regular file (a socket or device)"),
    "verify_private_key": ("verify", lambda d, k: k / "signer", "holds a private key"),
}


@pytest.mark.parametrize(
    ("planted", "command", "key"),
    [
        ("manifest.json", "verify", ()),
        ("manifest.json", "verify", ("--public-key", "signer.pub")),
        ("manifest.json.sig", "verify", ("--public-key", "signer.pub")),
        ("manifest.json", "sign", ("--key", "signer")),
    ],
)
def test_a_fifo_planted_as_the_manifest_or_its_signature_is_named_not_waited_on(
    signed: Path, keys: Path, planted: str, command: str, key: tuple[str, ...]
) -> None:
    """A report directory from elsewhere may hold a FIFO where manifest.json or manifest.json.sig goes: verify
    (with or without --public-key) and sign open them as every input is opened (regularfile.open_regular)
    and say so in one line, instead of waiting forever for a writer."""
    (signed / planted).unlink()
    os.mkfifo(signed / planted, 0o600)
    line = failure(cli(command, str(signed), *(key and (key[0], str(keys / key[1])))))
    assert f"{signed / planted}: not a regular file (a FIFO)" in line, line


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_each_unusable_key_file_is_a_one_line_error(
    signed: Path, keys: Path, tmp_path: Path, case: str
) -> None:
    command, make, message = BAD_KEYS[case]
    key = make(tmp_path, keys)
    signature = (signed / "manifest.json.sig").read_bytes()
    flag = "--key" if command == "sign" else "--public-key"
    line = failure(cli(command, str(signed), flag, str(key)))
    assert line.startswith(f"scanner: error: {key}: ") and message in line, line
    assert (signed / "manifest.json.sig").read_bytes() == signature  # nothing signed over it


def test_an_encrypted_key_takes_its_passphrase_from_the_environment(signed: Path, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    assert cli("keygen", "--out", str(key), env={PASSPHRASE: "correct horse"}).returncode == 0
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert f"${PASSPHRASE}" in failure(cli("sign", str(signed), "--key", str(key)))
    wrong = failure(cli("sign", str(signed), "--key", str(key), env={PASSPHRASE: "battery staple"}))
    assert f"wrong passphrase in ${PASSPHRASE}" in wrong
    assert cli("sign", str(signed), "--key", str(key), env={PASSPHRASE: "correct horse"}).returncode == 0
    result = cli("verify", str(signed), "--public-key", f"{key}.pub")
    assert result.returncode == 0 and result.stdout.startswith("signature OK")


def test_verify_of_something_that_is_not_a_report_directory_says_so(tmp_path: Path, keys: Path) -> None:
    public = str(keys / "signer.pub")
    assert "not a directory" in failure(cli("verify", str(tmp_path / "absent"), "--public-key", public))
    assert "manifest.json: no such file" in failure(cli("verify", str(tmp_path), "--public-key", public))


def test_sign_refuses_a_directory_that_does_not_verify(tmp_path: Path, keys: Path) -> None:
    built = build_report(tmp_path)
    _edit_report(built.out)
    result = cli("sign", str(built.out), "--key", str(keys / "signer"))
    assert result.returncode == 1
    assert "changed: evidence.jsonl" in result.stdout and "not signed" in result.stdout.splitlines()[-1]
    assert not (built.out / "manifest.json.sig").exists()


def test_regenerating_report_html_needs_a_new_signature(signed: Path, keys: Path) -> None:
    """`scanner report` records report.html's new digest in manifest.json: the signature no longer holds."""
    unchanged = cli("report", str(signed))  # the same page again: the manifest and its signature still agree
    assert unchanged.returncode == 0 and "sign again" not in unchanged.stdout
    report = cli("report", str(signed), "--show-urls")
    assert report.returncode == 0 and "no longer holds; sign again" in report.stdout
    public = str(keys / "signer.pub")
    assert "changed since it was signed" in failure(cli("verify", str(signed), "--public-key", public))
    assert cli("sign", str(signed), "--key", str(keys / "signer")).returncode == 0
    assert cli("verify", str(signed), "--public-key", public).returncode == 0
