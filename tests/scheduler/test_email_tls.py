"""E-mail over STARTTLS against a real aiosmtpd server that requires it, trusting a private CA the test makes."""

from __future__ import annotations

import ssl
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from careplan import config as careplan_config
from scheduler import worker
from tests.scheduler.conftest import NOW, add_channel, add_reminders, deliveries, free_port


def _certificates(tmp_path):
    """Write a private CA and a server certificate for DNS "localhost" signed by it; return their PEM paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "careplan test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
              # localhost only: connecting by IP address must fail host name verification.
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


@pytest.fixture
def tls_smtp(tmp_path):
    """Run an aiosmtpd server on 127.0.0.1 that refuses mail until STARTTLS; yield (port, ca file, received)."""
    from aiosmtpd.controller import Controller

    ca_file, cert_file, key_file = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
            received.append((envelope, session.ssl is not None))
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True)
    controller.start()
    yield controller.port, str(ca_file), received
    controller.stop()


def _send(database, settings) -> None:
    add_reminders(database, 1)
    add_channel(database, channel="email", address="coordinator@example.org", secret=None)
    summary = worker.tick(database, now=NOW, holder="worker-1", settings=settings, periodic=False)
    assert summary.errors == []


def test_starttls_delivers_to_a_server_whose_certificate_the_configured_ca_signed(database, settings, tls_smtp):
    port, ca_file, received = tls_smtp
    _send(database, replace(settings, smtp_host="localhost", smtp_port=port, smtp_starttls=True,
                            smtp_ca_file=ca_file, smtp_from="reminders@careplan.example.org"))
    [(envelope, encrypted)] = received
    assert encrypted and envelope.rcpt_tos == ["coordinator@example.org"]
    assert deliveries(database, channel="email")[0].state == "delivered"


def test_starttls_refuses_a_certificate_no_trusted_ca_signed(database, settings, tls_smtp):
    port, _, received = tls_smtp
    _send(database, replace(settings, smtp_host="localhost", smtp_port=port, smtp_starttls=True, smtp_ca_file=None))
    [row] = deliveries(database, channel="email")
    assert received == [] and row.state == "pending" and "SSLCertVerificationError" in row.last_error


def test_starttls_verifies_the_host_name(database, settings, tls_smtp):
    port, ca_file, received = tls_smtp
    _send(database, replace(settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=True,
                            smtp_ca_file=ca_file))
    [row] = deliveries(database, channel="email")
    assert received == [] and row.state == "pending" and "SSLCertVerificationError" in row.last_error


def test_without_starttls_a_server_that_requires_it_refuses_the_mail(database, settings, tls_smtp):
    port, ca_file, received = tls_smtp
    _send(database, replace(settings, smtp_host="localhost", smtp_port=port, smtp_starttls=False,
                            smtp_ca_file=ca_file))
    [row] = deliveries(database, channel="email")
    assert received == [] and row.state == "pending" and row.last_error.startswith("SMTP failed")


def test_the_ca_file_comes_from_the_environment():
    settings = careplan_config.from_env({"CAREPLAN_SMTP_CA_FILE": "/etc/careplan/smtp-ca.pem"})
    assert settings.smtp_ca_file == "/etc/careplan/smtp-ca.pem"
    assert careplan_config.from_env({}).smtp_ca_file is None
