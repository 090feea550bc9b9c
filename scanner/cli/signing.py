"""Command line of signed reports: keygen, sign, and verify's --public-key (see scanner.reports.signing)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from scanner.cli import outputs
from scanner.exitcodes import ExitCode

INTEGRITY_ONLY = (
    "note: this checks integrity, not origin: whoever can edit these files can edit manifest.json too; "
    "to know who made them, sign them (scanner sign DIR --key KEY) and verify with --public-key KEY.pub"
)


def _keygen_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--out",
        required=True,
        metavar="KEY",
        help="private key file to create (0600, PEM; encrypted with $SCANNER_KEY_PASSPHRASE when set); "
        "the public key goes to KEY.pub",
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    from scanner.reports.signing import generate_keypair  # start-up cost: cryptography

    outputs.check_file(args.out, "--out")
    private, public, fingerprint = generate_keypair(args.out)
    print(f"private key: {private} (keep it to yourself; it signs reports in your name)")
    print(f"public key:  {public} (give it to whoever checks your reports)")
    print(f"fingerprint: {fingerprint}")
    return ExitCode.OK


def _sign_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dir", help="a finished scan's report directory (its --out)")
    sub.add_argument("--key", required=True, help="Ed25519 private key (PEM), e.g. from scanner keygen")


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign only a directory that verifies: a signature vouches for files that match their manifest."""
    from scanner.reports.signing import load_private_key, sign_report
    from scanner.reports.verify import verify_report
    from scanner.run.reportlock import report_lock  # start-up cost: cryptography, pyarrow

    outputs.check_dir(args.dir, "DIR", must_exist=True)
    load_private_key(args.key)  # a bad key is reported before the directory is read
    with report_lock(args.dir, "sign"):  # nothing may change between the check and the signature
        result = verify_report(args.dir)
        if not result.ok:
            for line in result.lines():
                print(line)
            print(f"not signed: {args.dir} does not match its manifest (see above)")
            return ExitCode.ERROR
        signed = sign_report(args.dir, args.key)
    print(f"signed: {signed.signature} (key {signed.fingerprint})")
    public = f"{args.key}.pub" if os.path.isfile(f"{args.key}.pub") else "PUBLIC_KEY"
    print(f"check it with: scanner verify {args.dir} --public-key {public}")
    return ExitCode.OK


def add_verify_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dir", help="a finished scan's report directory (its --out)")
    sub.add_argument(
        "--public-key",
        metavar="PUB",
        help="Ed25519 public key (PEM): also check manifest.json.sig, i.e. who made the reports",
    )


def verify_lines(args: argparse.Namespace) -> tuple[list[str], bool]:
    """verify's output and verdict. With --public-key: the signature first (a manifest that is not the signed
    one is not checked further), then the digests and the schema; without, a last line saying that this
    proves integrity, not origin. A key file that cannot be used is an error (raised)."""
    from scanner.reports.verify import verify_report  # start-up cost: loaded when the command runs

    if not args.public_key:
        result = verify_report(args.dir)
        return [*result.lines(), INTEGRITY_ONLY], result.ok
    from scanner.reports.signing import SignatureError, verify_signature  # start-up cost: cryptography

    try:
        signed = verify_signature(args.dir, args.public_key)
    except SignatureError as exc:
        return [f"FAILED: {exc}"], False
    result = verify_report(args.dir)
    return [signed, *result.lines()], result.ok


def stale_signature_note(out_dir: str) -> str | None:
    """For commands that rewrite manifest.json (report): say when its signature no longer matches it."""
    from scanner.reports.signing import signature_is_stale  # start-up cost: cryptography

    if not signature_is_stale(out_dir):
        return None
    return (
        "note: manifest.json changed, so its signature (manifest.json.sig) no longer holds; sign again: "
        f"scanner sign {out_dir} --key KEY"
    )


SIGNING_COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("keygen", "create an Ed25519 key pair for signing reports", cmd_keygen, _keygen_args),
    ("sign", "sign a verified report directory's manifest (manifest.json.sig)", cmd_sign, _sign_args),
]
