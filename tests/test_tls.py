"""TLS (issue 18 item 1): ``serve`` with a certificate and its key (flags or config.toml) answers
HTTPS only; the official ollama, openai and anthropic clients, the CLI and ``client.Client`` reach it
through a CA file. The certificates are made here: a CA, and a server certificate it signs for
127.0.0.1 and localhost."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import ollama
import openai
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from a3s_power.client import Client
from a3s_power.config import Config
from a3s_power.errors import InvalidOptionError
from a3s_power.server.serve import tls_context
from tests.serve_process import free_port

KEY = "tls-test-key-0123456789"
CHAT = [{"role": "user", "content": "hi"}]


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificates(folder: Path, name: str = "A3S Power test CA") -> dict[str, Path]:
    """ca.pem (a CA), server.pem and server-key.pem (for 127.0.0.1, ::1 and localhost, signed by it)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                  x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(_pem(server_key))
    paths["key"].chmod(0o600)
    return paths


def _environ(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("A3S_POWER_", "OLLAMA_"))}
    return {**clean, **env}


@contextmanager
def https_serve(home: Path, ca: Path, *args: str, **env: str) -> Iterator[str]:
    """``a3s-power serve ARGS`` in a process of its own on a free port; yields its https:// URL once
    it answers (checked against ``ca``)."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "a3s_power", "serve", *args], stdout=log,
                                stderr=subprocess.STDOUT,
                                env=_environ(A3S_POWER_HOME=str(home), OLLAMA_HOST=f"127.0.0.1:{port}", **env))
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.head(url + "/", verify=str(ca), timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited at start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs, tiny_path):
    """HTTPS from the flags, with an API key; the tiny model created through the ollama client."""
    with https_serve(tmp_path_factory.mktemp("home"), certs["ca"], "--tls-cert", str(certs["cert"]),
                     "--tls-key", str(certs["key"]), A3S_POWER_API_KEY=KEY) as url:
        client = ollama.Client(host=url, verify=trusting(certs), headers={"Authorization": f"Bearer {KEY}"})
        client.create(model="tiny", files={"model.gguf": client.create_blob(tiny_path)})
        yield url


def trusting(certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs["ca"]))


def test_the_ollama_client_over_https(server, certs):
    client = ollama.Client(host=server, verify=trusting(certs), headers={"Authorization": f"Bearer {KEY}"})
    assert "tiny:latest" in {m.model for m in client.list().models}
    assert client.chat(model="tiny", messages=CHAT, options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as refused:  # TLS does not stand in for the key
        ollama.Client(host=server, verify=trusting(certs)).list()
    assert refused.value.status_code == 401


def test_the_openai_client_over_https(server, certs):
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0,
                           http_client=openai.DefaultHttpxClient(verify=trusting(certs)))
    assert "tiny:latest" in {m.id for m in client.models.list()}
    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_the_anthropic_client_over_https(server, certs):
    client = anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0,
                                 http_client=anthropic.DefaultHttpxClient(verify=trusting(certs)))
    assert client.messages.create(model="tiny", max_tokens=2, messages=CHAT).stop_reason in ("end_turn", "max_tokens")


def test_an_untrusted_certificate_or_plain_http_gets_nothing(server, certs, tmp_path):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server + "/", timeout=10)  # the system's CAs do not know the test CA
    with pytest.raises(ConnectionError):  # another CA's (ollama-python's own ConnectionError)
        ollama.Client(host=server, verify=trusting(make_certificates(tmp_path, "another CA"))).list()
    with pytest.raises(requests.ConnectionError):  # no plain HTTP on the port
        requests.get(server.replace("https://", "http://") + "/", timeout=10)


def test_the_in_process_client_with_a_ca_file(server, certs):
    async def tags():
        async with Client(server, api_key=KEY, ca_file=certs["ca"]) as client:
            return await client.request("GET", "/api/tags")

    assert "tiny:latest" in {m["name"] for m in asyncio.run(tags())["models"]}


def cli(server: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a3s_power", *args], capture_output=True, text=True, timeout=300,
                          env=_environ(OLLAMA_HOST=server, **env))


def test_the_cli_over_https(server, certs, tmp_path):
    ran = cli(server, "list", A3S_POWER_API_KEY=KEY, A3S_POWER_CA_FILE=str(certs["ca"]),
              A3S_POWER_HOME=str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    assert "tiny:latest" in ran.stdout
    ran = cli(server, "run", "tiny", "hi", A3S_POWER_API_KEY=KEY, A3S_POWER_CA_FILE=str(certs["ca"]),
              A3S_POWER_HOME=str(tmp_path))
    assert ran.returncode == 0, ran.stderr


@pytest.mark.parametrize("command", [("list",), ("run", "tiny", "hi")])
def test_the_cli_without_the_ca_says_so(server, tmp_path, command):
    """An untrusted certificate is an error at once, not a second server started in the background."""
    ran = cli(server, *command, A3S_POWER_API_KEY=KEY, A3S_POWER_HOME=str(tmp_path))
    assert ran.returncode == 1
    assert ran.stderr.startswith("Error: the server's certificate at 127.0.0.1:") and "A3S_POWER_CA_FILE" in ran.stderr
    assert "Traceback" not in ran.stderr and not (tmp_path / "server.log").exists()


def test_https_from_config_toml(tmp_path, certs):
    home = tmp_path / "home"
    home.mkdir()
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    (home / "config.toml").write_text(f'tls_cert = "{certs["cert"]}"\ntls_key = "{certs["key"]}"\n'
                                      f'api_key_file = "{keys}"\n')
    with https_serve(home, certs["ca"]) as url:
        r = requests.get(url + "/api/version", verify=str(certs["ca"]), headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        assert requests.get(url + "/api/version", verify=str(certs["ca"])).status_code == 401
    assert "over HTTPS" in (home / "server.log").read_text()


def test_a_certificate_without_its_key_is_an_error(tmp_path, certs):
    with pytest.raises(InvalidOptionError, match="both a certificate and its key"):
        tls_context(Config(home=tmp_path, tls_cert=certs["cert"]))
    with pytest.raises(InvalidOptionError, match="cannot load the TLS certificate"):
        tls_context(Config(home=tmp_path, tls_cert=certs["cert"], tls_key=certs["ca"]))
    assert tls_context(Config(home=tmp_path)) is None
    ran = subprocess.run([sys.executable, "-m", "a3s_power", "serve", "--tls-cert", str(certs["cert"])],
                         capture_output=True, text=True, timeout=120,
                         env=_environ(A3S_POWER_HOME=str(tmp_path), OLLAMA_HOST=f"127.0.0.1:{free_port()}"))
    assert ran.returncode == 1 and "Error: HTTPS needs both a certificate and its key" in ran.stderr
