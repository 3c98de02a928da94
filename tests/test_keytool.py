"""``gridedge keys generate``: an Ed25519 pair whose private half is written 0600, never printed, never
overwritten by surprise."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent import keytool
from agent.cli import main as agent_main
from protocols.telemetry.commands import load_private_key, parse_public_key, public_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_a_private_key_0600_in_a_new_0700_folder_and_prints_only_the_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert agent_main(["keys", "generate", "--out", str(out), "--name", "ops-1"]) == 0
    printed = capsys.readouterr().out
    key_file, pub_file = out / "ops-1.key", out / "ops-1.pub"
    assert mode(out) == 0o700 and mode(key_file) == 0o600
    key = load_private_key(key_file)
    pub = public_text(key.public_key())
    assert pub_file.read_text() == pub + "\n" and len(pub) == 44
    parse_public_key(pub_file.read_text())
    assert pub in printed and str(key_file) in printed and str(pub_file) in printed
    pem_body = "".join(key_file.read_text().splitlines()[1:-1])
    assert "PRIVATE KEY" not in printed and pem_body not in printed


def test_an_existing_key_is_not_overwritten_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["keys", "generate", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "gridedge.key").read_bytes()
    capsys.readouterr()
    assert agent_main(["keys", "generate", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gridedge.key exists" in err and "--force" in err
    assert (tmp_path / "gridedge.key").read_bytes() == before
    assert agent_main(["keys", "generate", "--out", str(tmp_path), "--force"]) == 0
    after = (tmp_path / "gridedge.key").read_bytes()
    assert after != before and mode(tmp_path / "gridedge.key") == 0o600
    assert (tmp_path / "gridedge.pub").read_text().strip() == public_text(
        load_private_key(tmp_path / "gridedge.key").public_key()
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_existing_public_file_alone_also_stops_a_new_pair(tmp_path: Path) -> None:
    """A .pub without its .key (copied in from a site) must not be replaced by a pair it does not belong to."""
    (tmp_path / "site-a.pub").write_text("kept\n")
    with pytest.raises(keytool.KeyToolError, match="site-a.pub exists"):
        keytool.generate_pair(tmp_path, "site-a")
    assert not (tmp_path / "site-a.key").exists() and (tmp_path / "site-a.pub").read_text() == "kept\n"


def test_an_existing_folder_keeps_its_mode_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    keytool.generate_pair(tmp_path, "a")
    assert mode(tmp_path) == 0o750
    with pytest.raises(keytool.KeyToolError, match="--name"):
        keytool.generate_pair(tmp_path, "../escape")
