"""``gridedge keys generate``: an Ed25519 key pair for signed commands (docs/commands.md, "Keys").

The private key goes to ``<out>/<name>.key`` (PEM, PKCS #8, unencrypted, mode 0600) and the public key to
``<out>/<name>.pub`` (its 44 characters of base64, what a site file or central's config lists). The private key
is written once, created with O_EXCL so no other file is ever overwritten by surprise, and never printed: only the
public key and the two paths are. ``--force`` replaces an existing pair through a temporary file renamed over it,
so an interrupted run leaves the old key or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.telemetry.commands import generate_key, private_pem, public_text

EXIT_USAGE = 2
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyToolError(Exception):
    """The pair cannot be written; the text names the file and why (never the key)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """What was written: the public key's text and the two files."""

    public_key: str
    key_file: Path
    pub_file: Path


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """``data`` into ``path`` created with ``mode``; an existing file is an error unless ``force``."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise KeyToolError(f"{path} exists; refusing to overwrite a key (--force replaces it)") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask; a key is 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_pair(out: Path, name: str, *, force: bool = False) -> KeyPair:
    """Write a new Ed25519 pair as ``out/name.key`` (0600) and ``out/name.pub``; ``out`` is created 0700 if new."""
    if not _NAME_RE.match(name):
        raise KeyToolError(f"--name = {name!r}: 1-64 letters, digits, '_', '.', '-' (it names the files)")
    key_file, pub_file = out / f"{name}.key", out / f"{name}.pub"
    if not force:
        for path in (key_file, pub_file):
            if path.exists():
                raise KeyToolError(f"{path} exists; refusing to overwrite a key (--force replaces it)")
    try:
        if not out.exists():
            out.mkdir(mode=0o700, parents=True)
            os.chmod(out, 0o700)  # the umask filters mkdir's mode too
        key = generate_key()
        pub = public_text(key.public_key())
        _write_new(key_file, private_pem(key), 0o600, force)
        if not force:
            os.chmod(key_file, 0o600)
        _write_new(pub_file, (pub + "\n").encode(), 0o644, force)
    except OSError as err:
        raise KeyToolError(f"cannot write the key pair in {out}: {err.strerror or err}") from None
    return KeyPair(pub, key_file, pub_file)


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        pair = generate_pair(Path(args.out), args.name, force=args.force)
    except KeyToolError as err:
        print(f"gridedge keys generate: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"public key  {pair.public_key}")
    print(f"private key {pair.key_file} (mode 0600; keep it on the signing host only)")
    print(f"public file {pair.pub_file}")
    return 0


def add_parser(sub: Any) -> None:
    """``keys generate --out DIR [--name NAME] [--force]`` under the agent's subcommands."""
    keys = sub.add_parser("keys", help="signing keys for commands: keys generate --out DIR [--name NAME]")
    ksub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    gen = ksub.add_parser(
        "generate",
        help="a new Ed25519 key pair: DIR/NAME.key (private, 0600) and DIR/NAME.pub (public)",
        epilog="exit status: 0 written; 2 a key file exists (without --force) or cannot be written",
    )
    gen.add_argument("--out", required=True, help="the folder of the pair (created 0700 if new)")
    gen.add_argument("--name", default="gridedge", help="the files' name (default: gridedge)")
    gen.add_argument("--force", action="store_true", help="replace an existing pair")
    gen.set_defaults(func=cmd_keys)
