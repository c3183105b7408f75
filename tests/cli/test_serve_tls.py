"""`carebase serve` over TLS: a self-signed certificate made here, https fetches verified
against it, HSTS over TLS only, and clear errors for missing or mismatched files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_serve import cli_env, free_port

from carebase.api.security_headers import STRICT_TRANSPORT_SECURITY


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carebase test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextmanager
def serving(tmp_path: Path, base: str, *args: str, verify: object = True) -> Iterator[str]:
    """Run `carebase serve` until `base`/healthz answers; yields the log's text on exit."""
    port = int(base.rsplit(":", 1)[1])
    log = tmp_path / f"serve-{port}.log"
    env = cli_env(CAREBASE_DATA_DIR=str(tmp_path / "data"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebase", "serve", "--port", str(port), *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                r = httpx.get(f"{base}/healthz", timeout=1, verify=verify)  # type: ignore[arg-type]
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer in 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_https_with_hsts_and_http_without(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    base = f"https://127.0.0.1:{free_port()}"
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    trust = ssl.create_default_context(cafile=str(cert))  # verify against the generated cert
    with serving(tmp_path, base, *args, verify=trust) as output:
        assert f"carebase serving on {base}" in output
        with httpx.Client(base_url=base, verify=trust, timeout=10) as client:
            health = client.get("/healthz")
            meta = client.get("/fhir/metadata")
        for response in (health, meta):
            assert response.status_code == 200
            assert response.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY
            assert response.headers["x-content-type-options"] == "nosniff"
        assert meta.json()["resourceType"] == "CapabilityStatement"
        assert meta.json()["implementation"]["url"].startswith("https://")
        with pytest.raises(httpx.ConnectError):  # the default CA bundle does not trust it
            httpx.get(f"{base}/healthz", timeout=5)
        with pytest.raises(httpx.TransportError):  # plain http to a TLS port fails
            httpx.get(base.replace("https", "http") + "/healthz", timeout=5)

    plain = f"http://127.0.0.1:{free_port()}"
    with serving(tmp_path, plain) as output:
        assert f"carebase serving on {plain}" in output
        r = httpx.get(f"{plain}/fhir/metadata", timeout=10)
        assert r.status_code == 200
        assert "strict-transport-security" not in r.headers
        assert r.headers["x-frame-options"] == "DENY"


def test_tls_files_also_come_from_the_environment(tmp_path: Path) -> None:
    cert, _key = make_certificate(tmp_path)
    port = free_port()
    env = cli_env(
        CAREBASE_DATA_DIR=str(tmp_path / "data"),
        CAREBASE_SSL_CERTFILE=str(cert),
        CAREBASE_SSL_KEYFILE=str(tmp_path / "missing.key"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "carebase", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--ssl-keyfile" in proc.stderr and "no such file" in proc.stderr


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("only-cert", "go together"),
        ("missing-cert", "--ssl-certfile"),
        ("unreadable-key", "not readable"),
        ("mismatched", "must belong to the certificate"),
        ("not-pem", "cannot use the TLS certificate"),
    ],
)
def test_serve_refuses_bad_tls_files(tmp_path: Path, problem: str, expected: str) -> None:
    if problem == "unreadable-key" and os.getuid() == 0:
        pytest.skip("root reads files whatever their mode")
    cert, key = make_certificate(tmp_path)
    _other_cert, other_key = make_certificate(tmp_path, "other")
    args = {
        "only-cert": ["--ssl-certfile", str(cert)],
        "missing-cert": ["--ssl-certfile", str(tmp_path / "nope.crt"), "--ssl-keyfile", str(key)],
        "unreadable-key": ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
        "mismatched": ["--ssl-certfile", str(cert), "--ssl-keyfile", str(other_key)],
        "not-pem": ["--ssl-certfile", str(tmp_path / "junk.crt"), "--ssl-keyfile", str(key)],
    }[problem]
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    if problem == "unreadable-key":
        key.chmod(0)
    proc = subprocess.run(
        [sys.executable, "-m", "carebase", "serve", "--port", str(free_port()), *args],
        cwd=tmp_path,
        env=cli_env(CAREBASE_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error:") and expected in err, err
    assert "Traceback" not in proc.stderr


def test_serve_refuses_a_malformed_rate_limit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "carebase", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=cli_env(CAREBASE_DATA_DIR=str(tmp_path / "data"), CAREBASE_AUTH_RATE_LIMIT="lots"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: CAREBASE_AUTH_RATE_LIMIT") and "RATE/UNIT" in err, err
