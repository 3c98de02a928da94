"""scripts/site-credentials issues what it says, keeps secrets off stdout and refuses what would break the ACL.

The broker's use of these credentials is tests/test_broker_acl.py; here: the files, their modes, the
certificates' contents (read back with ``openssl x509``), and the refusals with their messages and exit code.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "site-credentials"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def ok(*args: str) -> subprocess.CompletedProcess:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def x509(cert: Path, *fields: str) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", *fields], capture_output=True, text=True,
                          check=True, timeout=30).stdout  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/install-system-packages.sh --test")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    ok("ca", "--out", str(d), "--host", "127.0.0.1", "--host", "mqtt.utility.example", "--days", "30")
    return d


def test_password_goes_to_a_0600_file_and_the_broker_file_not_to_stdout(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    proc = ok("password", "sub-elm.fdr_2", "--passwd-file", str(passwd), "--out", str(tmp_path))
    secret = (tmp_path / "sub-elm.fdr_2.password").read_text().strip()
    assert len(secret) == 64 and int(secret, 16) >= 0  # 256 random bits in hex
    assert mode(tmp_path / "sub-elm.fdr_2.password") == 0o600
    assert secret not in proc.stdout + proc.stderr
    line = passwd.read_text().strip()
    assert line.startswith("sub-elm.fdr_2:$7$")  # mosquitto_passwd's PBKDF2-SHA512 hash, not the password
    assert secret not in line


def test_password_is_printed_only_when_asked_and_replaced_only_with_force(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    ok("password", "s1", "--passwd-file", str(passwd), "--out", str(tmp_path))
    first = (tmp_path / "s1.password").read_text().strip()
    again = run("password", "s1", "--passwd-file", str(passwd), "--out", str(tmp_path))
    assert again.returncode == 2 and "pass --force" in again.stderr
    assert (tmp_path / "s1.password").read_text().strip() == first
    rotated = ok("password", "s1", "--passwd-file", str(passwd), "--out", str(tmp_path), "--force", "--print")
    second = (tmp_path / "s1.password").read_text().strip()
    assert rotated.stdout.strip() == second != first
    assert [ln.split(":")[0] for ln in passwd.read_text().splitlines()] == ["s1"]  # replaced, not added twice


def test_ca_makes_a_broker_certificate_for_each_host(ca: Path) -> None:
    assert mode(ca / "ca.key") == 0o600 and mode(ca / "server.key") == 0o600
    text = x509(ca / "server.crt", "-text")
    assert "IP Address:127.0.0.1, DNS:mqtt.utility.example" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:TRUE" in x509(ca / "ca.crt", "-text")


def test_cert_is_an_ec_p256_client_certificate_with_cn_site(ca: Path, tmp_path: Path) -> None:
    ok("cert", "site-7", "--ca-cert", str(ca / "ca.crt"), "--ca-key", str(ca / "ca.key"), "--out", str(tmp_path),
       "--days", "10")  # fmt: skip
    crt = tmp_path / "site-7.crt"
    assert x509(crt, "-subject").strip() == "subject=CN = site-7"
    text = x509(crt, "-text")
    assert "prime256v1" in text and "TLS Web Client Authentication" in text and "CA:FALSE" in text
    assert mode(tmp_path / "site-7.key") == 0o600
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "ca.crt"), str(crt)], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    days = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-checkend", str(11 * 86400)],
                          capture_output=True, timeout=30)  # fmt: skip
    assert days.returncode == 1  # expires within 11 days: --days 10 was honoured


def test_crl_lists_each_revoked_certificate_once(ca: Path, tmp_path: Path) -> None:
    """Revoking twice (a retry) keeps one entry; the list is signed by the CA and names the serial."""
    ca_args = ["--ca-cert", str(ca / "ca.crt"), "--ca-key", str(ca / "ca.key")]
    ok("cert", "site-9", *ca_args, "--out", str(tmp_path))
    crl = tmp_path / "ca.crl"
    ok("crl", *ca_args, "--crl", str(crl))
    empty = subprocess.run(["openssl", "crl", "-in", str(crl), "-noout", "-text"], capture_output=True, text=True,
                           check=True, timeout=30).stdout  # fmt: skip
    assert "No Revoked Certificates" in empty
    for _ in range(2):
        ok("crl", *ca_args, "--crl", str(crl), "--revoke", str(tmp_path / "site-9.crt"))
    text = subprocess.run(["openssl", "crl", "-in", str(crl), "-noout", "-text", "-CAfile", str(ca / "ca.crt")],
                          capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    serial = x509(tmp_path / "site-9.crt", "-serial").strip().split("=")[1]
    assert text.stdout.count("Serial Number:") == 1 and serial in text.stdout
    assert "verify OK" in text.stderr
    refused = run("crl", *ca_args, "--crl", str(crl), "--revoke", str(ca / "ca.crt"))
    assert refused.returncode == 2 and "that is a CA's certificate" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["password", "a+b"], "must match"),
        (["password", "a/b"], "must match"),
        (["password", "#"], "must match"),
        (["password", "x" * 65], "must match"),
        (["password", "-site"], "the site id comes first"),
        (["password", "central"], "pass --central"),
        (["cert", "central-w1"], "pass --central"),
        (["password", "s1"], "--passwd-file FILE is required"),
        (["cert", "s1", "--out", "."], "--ca-cert, --ca-key and --out are required"),
        (["cert", "s1", "--days", "0"], "--days '0'"),
        (["ca", "--out", "."], "--host NAME"),
        (["ca", "--out", ".", "--host", "bad host"], "--host 'bad host'"),
        (["password", "s1", "--passwd-file", "p", "--bogus"], "unknown option '--bogus'"),
        (["crl", "--crl", "x.crl"], "--ca-cert, --ca-key and --crl are required"),
        (["password", "s1", "--passwd-file", "p", "--crl", "x"], "password: takes"),
        (["renew"], "unknown command 'renew'"),
    ],
)
def test_refusals_name_the_problem_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written
