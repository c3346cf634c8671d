"""fedrec.client.deploy: the SuperNode's authentication key and the `flower-supernode` command."""

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrec.client.deploy import make_node_key, public_key_path, supernode_command
from fedrec.common.errors import ConfigError


def mode(path):
    return stat.S_IMODE(Path(path).stat().st_mode)


def value_of(argv, flag):
    return argv[argv.index(flag) + 1]


@pytest.fixture
def node(tmp_path):
    """A key pair and a CA file, as a device has them."""
    make_node_key(tmp_path / "node.key")
    (tmp_path / "ca.pem").write_text("not read by the command builder\n")
    return tmp_path


# --- the key ------------------------------------------------------------------------------

def test_node_key_is_an_openssh_p384_pair_private_0600(tmp_path):
    public = make_node_key(tmp_path / "node.key")
    private = serialization.load_ssh_private_key((tmp_path / "node.key").read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert public.startswith("ecdsa-sha2-nistp384 ")
    assert public_key_path(tmp_path / "node.key").read_text() == public + "\n"
    assert serialization.load_ssh_public_key(public.encode()) == private.public_key()
    assert mode(tmp_path / "node.key") == 0o600 and mode(tmp_path / "node.key.pub") == 0o644


def test_flower_accepts_the_public_key(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    make_node_key(tmp_path / "node.key")
    assert try_load_public_key(public_key_path(tmp_path / "node.key"))


def test_each_key_is_new(tmp_path):
    assert make_node_key(tmp_path / "a") != make_node_key(tmp_path / "b")


# --- the command --------------------------------------------------------------------------

def test_command_has_tls_auth_and_the_store(node):
    argv = supernode_command("example.org:8000", node / "store.sqlite", node / "ca.pem", node / "node.key",
                             runtime_port=9200)
    assert Path(argv[0]).name == "flower-supernode"
    assert value_of(argv, "--superlink") == "example.org:8000"
    assert value_of(argv, "--root-certificates") == str((node / "ca.pem").resolve())
    assert value_of(argv, "--auth-supernode-private-key") == str((node / "node.key").resolve())
    assert value_of(argv, "--node-config") == f"store='{(node / 'store.sqlite').resolve()}'"
    assert value_of(argv, "--port") == "9200"
    assert "--insecure" not in argv


def test_system_cas_when_no_root_certificates(node):
    argv = supernode_command("example.org:443", node / "s", None, node / "node.key")
    assert "--root-certificates" not in argv and "--insecure" not in argv


def test_insecure_only_when_asked_and_then_without_key_or_certificates(node):
    with pytest.raises(ConfigError, match="fedrec client keygen --out FILE"):
        supernode_command("h:1", node / "s", node / "ca.pem", None)
    with pytest.raises(ConfigError, match="drop --key"):
        supernode_command("h:1", node / "s", None, node / "node.key", insecure=True)
    with pytest.raises(ConfigError, match="drop --root-certificates"):
        supernode_command("h:1", node / "s", node / "ca.pem", None, insecure=True)
    argv = supernode_command("h:1", node / "s", None, None, insecure=True)
    assert "--insecure" in argv and "--auth-supernode-private-key" not in argv


def test_missing_files_are_named_with_their_flag(node):
    with pytest.raises(ConfigError, match=r"--key .*nope: no such file"):
        supernode_command("h:1", node / "s", node / "ca.pem", node / "nope")
    with pytest.raises(ConfigError, match=r"--root-certificates .*nope.pem: no such file"):
        supernode_command("h:1", node / "s", node / "nope.pem", node / "node.key")


@pytest.mark.parametrize("server", ["example.org", "https://example.org:443", "h:0", "h:x", ":80", "h:70000"])
def test_bad_server_addresses_are_refused(node, server):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        supernode_command(server, node / "s", None, node / "node.key")


def test_a_store_path_with_a_quote_is_refused(node):
    with pytest.raises(ConfigError, match="quote"):
        supernode_command("h:1", node / "it's.sqlite", None, node / "node.key")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="'/\x00"),
                    min_size=1, max_size=40).filter(lambda n: n not in {".", ".."}))
def test_the_store_reaches_node_config_as_flower_parses_it(node, name):
    from flwr.common.config import parse_config_args

    argv = supernode_command("h:1", node / name, None, node / "node.key")
    assert parse_config_args([value_of(argv, "--node-config")]) == {"store": str((node / name).resolve())}


# --- the CLI ------------------------------------------------------------------------------



def test_cli_keygen_prints_the_public_key_and_keeps_an_existing_key(tmp_path, fedrec_cli):
    code, out, err = fedrec_cli("client", "keygen", "--out", str(tmp_path / "node.key"))
    assert code == 0 and out.strip() == (tmp_path / "node.key.pub").read_text().strip()
    assert "fedrec server register-node node.key.pub" in err
    code, _, err = fedrec_cli("client", "keygen", "--out", str(tmp_path / "node.key"))
    assert code == 2 and "node.key: exists; pass --force" in err
    code, out2, _ = fedrec_cli("client", "keygen", "--out", str(tmp_path / "node.key"), "--force")
    assert code == 0 and out2 != out


def test_cli_start_dry_run_and_refusals(node, fedrec_cli):
    code, out, _ = fedrec_cli("client", "start", "--server", "127.0.0.1:8000", "--store",
                          str(node / "store.sqlite"), "--root-certificates", str(node / "ca.pem"),
                          "--key", str(node / "node.key"), "--dry-run")
    assert code == 0 and "--auth-supernode-private-key" in out and f"'store='\"'\"'{node}" in out
    code, _, err = fedrec_cli("client", "start", "--server", "127.0.0.1:8000", "--store",
                          str(node / "store.sqlite"))
    assert code == 2 and "fedrec client keygen" in err
    code, _, err = fedrec_cli("client", "start", "--server", "127.0.0.1:8000", "--store",
                          str(node / "no" / "store.sqlite"), "--insecure")
    assert code == 2 and "its directory does not exist" in err
