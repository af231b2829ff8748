"""Redis credentials and TLS come from DISTDB_REDIS_URL alone (issue #9): the Channels
layer (master -> tablet commands) and the Celery broker both talk to a Redis that
requires TLS and a password, given ``rediss://:<password>@host:port/0?ssl_...``."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from distdb.cluster.config import MANAGE_PY, ROOT, caller_env, free_ports

pytestmark = pytest.mark.integration

CHECK = """
import asyncio
from channels.layers import get_channel_layer
from distdb.celery import app

async def roundtrip():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "probe", "n": 7})
    return await asyncio.wait_for(layer.receive(channel), 10)

print("channels", asyncio.run(roundtrip())["n"])
with app.connection_for_write() as conn:
    conn.ensure_connection(max_retries=1)
    print("celery", conn.as_uri())
"""


def _self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server with TLS here")
def test_channels_and_celery_use_tls_and_a_password_given_by_url(tmp_path):
    cert, key = _self_signed(tmp_path)
    [port] = free_ports(1)
    redis = subprocess.Popen(
        [
            "redis-server",
            *("--port", "0", "--tls-port", str(port), "--save", "", "--dir", str(tmp_path)),
            *("--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert),
            *("--tls-auth-clients", "no", "--requirepass", "s3cret"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        assert redis.stdout is not None
        for line in redis.stdout:
            if "Ready to accept connections" in line or time.monotonic() > deadline:
                break
        if redis.poll() is not None:
            pytest.skip("this redis-server has no TLS support")
        url = f"rediss://:s3cret@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        env = {
            **caller_env(),
            "DJANGO_SETTINGS_MODULE": "distdb.settings.master",
            "DISTDB_DATA_DIR": str(tmp_path / "var"),
            "DISTDB_REDIS_URL": url,
        }
        done = subprocess.run(
            [sys.executable, str(MANAGE_PY), "shell", "-c", CHECK],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "channels 7" in done.stdout
        assert "celery rediss://:**@127.0.0.1" in done.stdout
    finally:
        redis.kill()
        redis.wait()
