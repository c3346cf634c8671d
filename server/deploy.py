"""Deployment on Flower's deployment engine: TLS material, the SuperLink command, the flwr
connection that `flwr run` and `flwr supernode register` read.

Flower 1.41 serves the Fleet, Control and Runtime (ServerAppIo) APIs of a SuperLink on one
HTTPS port (`--host`/`--port`, default 127.0.0.1:8000) with one certificate. The SuperLink's
own SuperExec reaches the Runtime API on the loopback address with the CA certificate, so
the server certificate always names 127.0.0.1 and localhost besides the hosts asked for.

Torch-free: importing this module loads `cryptography` only.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrec.common import atomic
from fedrec.common.deploy import flower_executable, process_env, write_file
from fedrec.common.errors import ConfigError, FedrecError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000  # Flower 1.41: Fleet, Control and Runtime APIs share this port
CONNECTION_NAME = "fedrec"  # the [superlink.<name>] entry in the flwr config
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"

_NIST_CURVES = {"secp192r1", "secp224r1", "secp256r1", "secp384r1", "secp521r1"}  # as Flower
_DNS_NAME = re.compile(r"(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class DeployError(FedrecError):
    """A Flower deployment step (registering a node, starting a process) that failed."""


@dataclass(frozen=True)
class Certificates:
    """The files of a certificate directory made by `make_certificates`."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY


def make_certificates(out_dir: str | os.PathLike, hosts: list[str], days: int = 365) -> Certificates:
    """Write a CA (key + self-signed certificate) and a server key + certificate signed by it.

    The server certificate names every host as a subject alternative name: IP addresses as IP
    SANs, names as DNS SANs, plus 127.0.0.1 and localhost. Keys are P-384 EC keys, written
    with mode 0600; every file is written atomically.
    """
    if days < 1:
        raise ConfigError(f"days={days}: a certificate must be valid for at least 1 day")
    names = _subject_alt_names([*hosts, *LOOPBACK_HOSTS])
    certs = Certificates(Path(out_dir))
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrec SuperLink CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrec SuperLink")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    write_file(certs.ca_key, _pem(ca_key), 0o600)
    write_file(certs.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write_file(certs.server_key, _pem(server_key), 0o600)
    write_file(certs.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return certs


def certificates_in(directory: str | os.PathLike) -> Certificates:
    """The certificates in `directory`, checked to exist (the CA key need not be there)."""
    certs = Certificates(Path(directory))
    for path in (certs.ca_cert, certs.server_cert, certs.server_key):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; make the certificates with "
                              f"`fedrec server certs --out {directory} --host <this server's name>`")
    return certs


def superlink_command(
    certs: Certificates | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    insecure: bool = False,
    database: str | os.PathLike | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The `flower-superlink` argv: TLS with `certs` and SuperNode authentication, or plain
    HTTP without authentication when `insecure` (Flower refuses authentication without TLS).

    Runtime dependency installation (`uv sync` of the app's dependencies at every run) is
    disabled: the apps run from the installed fedrec package.
    """
    if insecure == (certs is not None):
        raise ConfigError("the SuperLink needs certificates (--certs DIR) or --insecure, not both"
                          if insecure else
                          "the SuperLink runs with TLS by default: pass certificates (make them "
                          "with `fedrec server certs --out DIR --host <name>`) or --insecure")
    argv = [flower_executable("flower-superlink"), "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]
    if insecure:
        argv.append("--insecure")
    else:
        argv += ["--ssl-ca-certfile", str(certs.ca_cert.resolve()),
                 "--ssl-certfile", str(certs.server_cert.resolve()),
                 "--ssl-keyfile", str(certs.server_key.resolve()),
                 "--enable-supernode-auth"]
    if database is not None:
        argv += ["--database", str(Path(database).resolve())]
    return argv + list(extra_args or [])


def write_connection(
    flwr_home: str | os.PathLike,
    address: str,
    root_certificates: str | os.PathLike | None,
    *,
    name: str = CONNECTION_NAME,
    insecure: bool = False,
    default: bool = False,
) -> Path:
    """Add or replace the SuperLink connection `name` in `<flwr_home>/config.toml`.

    This is the "federation config" of flwr 1.41: `flwr run APP NAME` and
    `flwr supernode register KEY NAME` read `[superlink.NAME]` (address of the Control API,
    an absolute path to the CA certificate, or `insecure = true`) from the file under
    `$FLWR_HOME` (default `~/.flwr`). A `[tool.flwr.federations]` table in an app's
    pyproject.toml is legacy: `flwr run` migrates it here and comments it out.
    """
    if insecure == (root_certificates is not None):
        raise ConfigError(f"connection '{name}': give root certificates or insecure, not "
                          f"{'both' if insecure else 'neither'}")
    path = Path(flwr_home) / "config.toml"
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = data.setdefault("superlink", {})
    entry: dict[str, object] = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(root_certificates).resolve())
    superlink[name] = entry
    if default or "default" not in superlink:
        superlink["default"] = name
    atomic.write_text(path, tomli_w.dumps(data))
    return path


def read_node_public_key(path: str | os.PathLike) -> str:
    """The SuperNode public key in `path` (OpenSSH format, EC on a NIST curve, the `.pub`
    file of `fedrec client keygen`), checked the way Flower will check it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such public key file")
    text = path.read_text(errors="replace").strip()
    try:
        key = serialization.load_ssh_public_key(text.encode("ascii", errors="replace"))
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _NIST_CURVES:
        hint = " (that is the private key; register its .pub file)" if "PRIVATE KEY" in text else ""
        raise ConfigError(f"{path}: not a SuperNode public key{hint}; expected one OpenSSH line "
                          "'ecdsa-sha2-nistp384 AAAA…' as written by `fedrec client keygen`")
    return text


def register_node(public_key: str | os.PathLike, home: str | os.PathLike | None = None,
                  connection: str = CONNECTION_NAME, timeout: float = 60.0) -> int:
    """Register a SuperNode's public key with the SuperLink of `connection` (through its
    Control API, as `flwr supernode register` does) and return the node id it gets."""
    read_node_public_key(public_key)
    argv = [flower_executable("flwr"), "supernode", "register", str(Path(public_key).resolve()),
            connection, "--format", "json"]
    done = subprocess.run(argv, env=process_env(home), capture_output=True, text=True,
                          timeout=timeout, check=False)
    # flwr prints {"success": false, "error-message": …} and still exits 0 on failure
    try:
        reply = json.loads(done.stdout[done.stdout.index("{"):])
    except ValueError:
        reply = {"error-message": (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"}
    if not reply.get("success"):
        message = " ".join(str(reply.get("error-message", "")).split())
        raise DeployError(f"registering {public_key} with connection '{connection}' failed: {message}")
    return int(reply["node-id"])


def _subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in hosts):
        if not host:
            raise ConfigError("--host '': an empty host name")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            if not _DNS_NAME.fullmatch(host):
                raise ConfigError(f"--host {host!r}: neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host.lower()))
    return names


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=not cert_sign, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
