"""fedrec.server.deploy: TLS material, the SuperLink command, the flwr connection — and a real
federation (SuperLink over TLS with SuperNode authentication, two SuperNodes, `flwr run`)."""

import datetime
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given
from hypothesis import strategies as st

from fedrec.client.deploy import make_node_key, public_key_path, supernode_command
from fedrec.common.deploy import flower_executable, process_env
from fedrec.common.errors import ConfigError
from fedrec.server import deploy

FIXTURES = Path(__file__).parents[1] / "fixtures"
MINAPP = FIXTURES / "flwr_minapp"
sys.path.insert(0, str(FIXTURES))
from flwr_harness import FEDREC, Federation, free_port  # noqa: E402


def load_cert(path):
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def value_of(argv, flag):
    return argv[argv.index(flag) + 1]


def mode(path):
    return stat.S_IMODE(Path(path).stat().st_mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return deploy.make_certificates(tmp_path_factory.mktemp("certs"), ["10.1.2.3", "example.org", "::1"],
                                    days=30)


# --- certificates -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["example.org", "localhost"])
def test_server_certificate_verifies_against_the_ca_for_each_dns_name(certs, name):
    verifier = (PolicyBuilder().store(Store([load_cert(certs.ca_cert)]))
                .build_server_verifier(x509.DNSName(name)))
    chain = verifier.verify(load_cert(certs.server_cert), [])
    assert chain[-1] == load_cert(certs.ca_cert)


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "::1"])
def test_server_certificate_verifies_against_the_ca_for_each_ip_address(certs, address):
    import ipaddress

    verifier = (PolicyBuilder().store(Store([load_cert(certs.ca_cert)]))
                .build_server_verifier(x509.IPAddress(ipaddress.ip_address(address))))
    verifier.verify(load_cert(certs.server_cert), [])


def test_server_certificate_does_not_verify_for_another_host_or_another_ca(certs, tmp_path):
    verifier = (PolicyBuilder().store(Store([load_cert(certs.ca_cert)]))
                .build_server_verifier(x509.DNSName("evil.example.org")))
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(load_cert(certs.server_cert), [])
    other = deploy.make_certificates(tmp_path, ["example.org"])
    verifier = (PolicyBuilder().store(Store([load_cert(other.ca_cert)]))
                .build_server_verifier(x509.DNSName("example.org")))
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(load_cert(certs.server_cert), [])


def test_sans_are_ip_addresses_and_dns_names_plus_loopback(certs):
    san = load_cert(certs.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "::1", "127.0.0.1"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"example.org", "localhost"}


def test_key_files_are_0600_and_certificates_0644(certs):
    assert mode(certs.ca_key) == 0o600 and mode(certs.server_key) == 0o600
    assert mode(certs.ca_cert) == 0o644 and mode(certs.server_cert) == 0o644
    assert not list(certs.directory.glob(".*"))  # no temporary file left behind


def test_keys_match_their_certificates(certs):
    for key_path, cert_path in [(certs.ca_key, certs.ca_cert), (certs.server_key, certs.server_cert)]:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert key.public_key() == load_cert(cert_path).public_key()


def test_validity_window_is_now_to_days_ahead(certs):
    now = datetime.datetime.now(datetime.timezone.utc)
    for path in (certs.ca_cert, certs.server_cert):
        cert = load_cert(path)
        assert now - datetime.timedelta(hours=1) < cert.not_valid_before_utc <= now
        assert cert.not_valid_after_utc - now == pytest.approx(datetime.timedelta(days=30),
                                                               abs=datetime.timedelta(minutes=5))


def test_only_the_ca_may_sign(certs):
    def ca_flag(path):
        return load_cert(path).extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    assert ca_flag(certs.ca_cert) and not ca_flag(certs.server_cert)


@pytest.mark.parametrize("hosts, days", [(["bad host"], 30), (["-x.org"], 30), ([""], 30),
                                         (["example.org"], 0)])
def test_bad_hosts_or_days_are_refused_by_name(tmp_path, hosts, days):
    with pytest.raises(ConfigError, match=re.escape(repr(hosts[0])) if days else "days=0"):
        deploy.make_certificates(tmp_path, hosts, days)
    assert not list(tmp_path.iterdir())


@given(st.ip_addresses())
def test_any_ip_address_becomes_an_ip_san(address):
    names = deploy._subject_alt_names([str(address)])
    assert names[0] == x509.IPAddress(address)


def test_certificates_in_names_the_missing_file_and_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match=r"ca\.pem: missing.*fedrec server certs --out"):
        deploy.certificates_in(tmp_path)


# --- the SuperLink command ----------------------------------------------------------------

def test_superlink_command_has_tls_and_node_auth(certs):
    argv = deploy.superlink_command(certs, port=9999)
    assert Path(argv[0]).name == "flower-superlink"
    assert value_of(argv, "--ssl-ca-certfile") == str(certs.ca_cert.resolve())
    assert value_of(argv, "--ssl-certfile") == str(certs.server_cert.resolve())
    assert value_of(argv, "--ssl-keyfile") == str(certs.server_key.resolve())
    assert value_of(argv, "--host") == "127.0.0.1" and value_of(argv, "--port") == "9999"
    assert "--enable-supernode-auth" in argv and "--insecure" not in argv
    assert "--disable-runtime-dependency-installation" in argv


def test_superlink_command_refuses_no_certificates_unless_insecure(certs):
    with pytest.raises(ConfigError, match="fedrec server certs"):
        deploy.superlink_command(None)
    with pytest.raises(ConfigError, match="not both"):
        deploy.superlink_command(certs, insecure=True)
    argv = deploy.superlink_command(None, insecure=True)
    assert "--insecure" in argv
    assert not {"--enable-supernode-auth", "--ssl-certfile", "--ssl-keyfile"} & set(argv)


# --- the flwr connection ------------------------------------------------------------------

def test_connection_is_what_flwr_reads(tmp_path, certs, monkeypatch):
    from flwr.cli.flower_config import read_superlink_connection

    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "local"\n\n'
                                          '[superlink.local]\naddress = ":local:"\n')
    deploy.write_connection(tmp_path, "example.org:8000", certs.ca_cert)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    connection = read_superlink_connection("fedrec")
    assert connection.address == "example.org:8000" and not connection.insecure
    assert connection.root_certificates == str(certs.ca_cert.resolve())
    assert read_superlink_connection("local").address == ":local:"  # kept, still the default
    deploy.write_connection(tmp_path, "127.0.0.1:8001", None, insecure=True, default=True)
    connection = read_superlink_connection()
    assert connection.name == "fedrec" and connection.insecure and connection.address == "127.0.0.1:8001"


def test_connection_needs_certificates_or_insecure(tmp_path, certs):
    with pytest.raises(ConfigError, match="neither"):
        deploy.write_connection(tmp_path, "h:1", None)
    with pytest.raises(ConfigError, match="both"):
        deploy.write_connection(tmp_path, "h:1", certs.ca_cert, insecure=True)


# --- node public keys ---------------------------------------------------------------------

def test_read_node_public_key_accepts_keygen_output_and_refuses_others(tmp_path):
    public = make_node_key(tmp_path / "node")
    assert deploy.read_node_public_key(public_key_path(tmp_path / "node")) == public
    with pytest.raises(ConfigError, match=r"that is the private key; register its \.pub"):
        deploy.read_node_public_key(tmp_path / "node")
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (tmp_path / "ed.pub").write_bytes(ed)
    with pytest.raises(ConfigError, match="ed.pub: not a SuperNode public key"):
        deploy.read_node_public_key(tmp_path / "ed.pub")
    (tmp_path / "cut.pub").write_text("ecdsa-sha2-nistp384 AAAAE2VjZHNh")  # truncated
    with pytest.raises(ConfigError, match="cut.pub: not a SuperNode public key"):
        deploy.read_node_public_key(tmp_path / "cut.pub")
    with pytest.raises(ConfigError, match="no such public key file"):
        deploy.read_node_public_key(tmp_path / "missing.pub")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
def test_an_ssh_keygen_ecdsa_key_is_a_node_public_key_too(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, timeout=30)
    assert deploy.read_node_public_key(tmp_path / "k.pub").startswith("ecdsa-sha2-nistp384 ")


def test_register_node_without_a_superlink_fails_with_the_reason(tmp_path):
    make_node_key(tmp_path / "node")
    deploy.write_connection(tmp_path / "home", f"127.0.0.1:{free_port()}", None, insecure=True)
    with pytest.raises(deploy.DeployError, match="connection 'fedrec' failed: .*unavailable"):
        deploy.register_node(public_key_path(tmp_path / "node"), tmp_path / "home")


# --- the CLI ------------------------------------------------------------------------------



def test_cli_start_refuses_without_certificates_and_says_how_to_make_them(fedrec_cli):
    code, _, err = fedrec_cli("server", "start")
    assert code == 2 and "fedrec server certs --out DIR --host" in err and "--insecure" in err


def test_cli_certs_then_start_dry_run(tmp_path, fedrec_cli):
    code, out, _ = fedrec_cli("server", "certs", "--out", str(tmp_path), "--host", "example.org")
    assert code == 0 and str(tmp_path / "ca.pem") in out
    code, _, err = fedrec_cli("server", "certs", "--out", str(tmp_path), "--host", "example.org")
    assert code == 2 and "ca.pem: exists; pass --force" in err
    code, out, _ = fedrec_cli("server", "start", "--certs", str(tmp_path), "--port", "8443",
                          "--dry-run")
    assert code == 0
    assert "--enable-supernode-auth" in out and f"--ssl-certfile {tmp_path / 'server.pem'}" in out
    code, _, err = fedrec_cli("server", "start", "--certs", str(tmp_path / "nope"))
    assert code == 2 and "nope/ca.pem: missing" in err


def test_cli_register_node_refuses_a_private_key(tmp_path, fedrec_cli):
    make_node_key(tmp_path / "node")
    code, _, err = fedrec_cli("server", "register-node", str(tmp_path / "node"),
                          "--flwr-home", str(tmp_path))
    assert code == 2 and "register its .pub" in err


# --- a real federation --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_federation():
    # its own temporary directory: pytest's basetemp rotation (other sessions) must not remove it
    with tempfile.TemporaryDirectory(prefix="fedrec-federation-") as root:
        federation = Federation(Path(root))
        try:
            federation.start_superlink()
            yield federation
        finally:
            federation.stop()
            assert all(process.poll() is not None for process in federation.processes)


@pytest.mark.slow
def test_tls_federation_with_registered_nodes_completes_a_run(tls_federation):
    fed = tls_federation
    node_ids = {}
    for name in ("n1", "n2"):
        make_node_key(fed.root / f"{name}.key")
        node_ids[name] = deploy.register_node(public_key_path(fed.root / f"{name}.key"), fed.cli_home)
        fed.start_supernode(name, fed.root / f"{name}.key")
    run_config = fed.root / "run.toml"
    out = fed.root / "out.json"
    run_config.write_text(f'num-server-rounds = 2\nout = "{out}"\n')

    record = fed.run(MINAPP, run_config)

    assert record["status"] == "finished:completed", fed.log("superlink")[-3000:] + fed.log("n1")[-2000:]
    result = json.loads(out.read_text())
    assert result["run_config"] == {"num-server-rounds": 2, "num-nodes": 2, "out": str(out)}
    assert result["cwd"] == str(fed.root / "superlink")  # the ServerApp runs in the SuperLink's cwd
    replies = result["replies"]
    assert sorted(r["round"] for r in replies) == [1, 1, 2, 2]
    by_node = {name: [r for r in replies if r["node_id"] == node_ids[name]] for name in node_ids}
    for name, got in by_node.items():
        assert len(got) == 2
        assert {r["cwd"] for r in got} == {str(fed.root / name)}  # a ClientApp: its SuperNode's cwd
        assert {r["node_config"] for r in got} == {json.dumps({"store": str(fed.root / name / "device.sqlite")})}
    assert "Activated node_id" in fed.log("superlink")


@pytest.mark.slow
def test_unregistered_or_keyless_supernode_is_refused(tls_federation):
    fed = tls_federation
    make_node_key(fed.root / "stranger.key")
    stranger = fed.start_supernode("stranger", fed.root / "stranger.key")
    keyless = fed.spawn("keyless", [flower_executable("flower-supernode"), "--superlink", fed.address,
                                    "--root-certificates", str(fed.certs.ca_cert), "--port", str(free_port())])
    assert stranger.wait(timeout=60) != 0
    assert "Failed to activate SuperNode" in fed.log("stranger")
    assert keyless.wait(timeout=60) != 0
    assert "All SuperNodes must be registered" in fed.log("keyless")
    assert "No SuperNode found with the given public key" in fed.log("superlink")


@pytest.mark.slow
def test_supernode_without_tls_cannot_join_a_tls_superlink(tls_federation):
    fed = tls_federation
    plain = fed.spawn("plain", supernode_command(fed.address, fed.root / "plain" / "device.sqlite", None, None,
                                                 insecure=True, runtime_port=free_port(), max_wait_time=5))
    assert plain.wait(timeout=60) != 0
    assert "Exit Code: 305" in fed.log("plain")


@pytest.mark.slow
def test_cli_server_start_register_node_and_client_start():
    """The fedrec commands end to end: certs, start (writes the connection), keygen,
    register-node, client start — the node is activated."""
    with tempfile.TemporaryDirectory(prefix="fedrec-cli-federation-") as root:
        fed = Federation(Path(root))
        fedrec = FEDREC
        home = str(fed.root / "ops")
        try:
            subprocess.run([*fedrec, "server", "certs", "--out", str(fed.root / "tls"), "--host", "127.0.0.1"],
                           check=True, capture_output=True, timeout=60)
            (fed.root / "runs").mkdir()
            fed.spawn("superlink", [*fedrec, "server", "start", "--certs", str(fed.root / "tls"), "--port",
                                    str(fed.port), "--flwr-home", home, "--workdir", str(fed.root / "runs")])
            fed.wait_for_superlink()
            subprocess.run([*fedrec, "client", "keygen", "--out", str(fed.root / "device.key")],
                           check=True, capture_output=True, timeout=60)
            registered = subprocess.run([*fedrec, "server", "register-node", str(fed.root / "device.key.pub"),
                                         "--flwr-home", home], capture_output=True, text=True, timeout=60)
            assert registered.returncode == 0, registered.stderr + fed.log("superlink")[-2000:]
            node_id = re.search(r"as node (\d+)", registered.stdout).group(1)
            fed.spawn("device", [*fedrec, "client", "start", "--server", fed.address, "--store",
                                 str(fed.root / "device.sqlite"), "--root-certificates",
                                 str(fed.root / "tls" / "ca.pem"), "--key", str(fed.root / "device.key"),
                                 "--runtime-port", str(free_port()), "--flwr-home", str(fed.root / "device")])
            deadline = time.monotonic() + 60
            while f"Activated node_id={node_id}" not in fed.log("superlink"):
                assert time.monotonic() < deadline, fed.log("device")
                time.sleep(0.5)
            link = psutil.Process(fed.processes[0].pid)  # fedrec exec'd flower-superlink in --workdir
            assert Path(link.cmdline()[1]).name == "flower-superlink" and link.cwd() == str(fed.root / "runs")
        finally:
            fed.stop()


def test_flwr_home_of_processes_is_separate(tmp_path):
    env = process_env(tmp_path / "home")
    assert env["FLWR_HOME"] == str((tmp_path / "home").resolve())
    assert env["PATH"].split(os.pathsep)[0] == str(Path(flower_executable("flwr")).parent)
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" or "FLWR_TELEMETRY_ENABLED" in os.environ
