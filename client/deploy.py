"""A device on Flower's deployment engine: its SuperNode authentication key and the
`flower-supernode` command that connects it to a SuperLink.

SuperNode authentication in Flower 1.41: the SuperNode signs every Fleet request with an EC
private key on a NIST curve (OpenSSH format); its public key (OpenSSH format, the `.pub`
file) must be registered on the SuperLink first (`fedrec server register-node KEY.pub`,
i.e. `flwr supernode register KEY.pub <connection>`). A SuperNode started with a key never
registers itself: with an unregistered key it exits ("Failed to activate SuperNode", Flower's
exit code 305 in its log). Authentication needs TLS: `flower-supernode --insecure` with a key
exits too (303).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrec.common.deploy import flower_executable, write_file
from fedrec.common.errors import ConfigError

RUNTIME_PORT = 9094  # Flower's default port of a SuperNode's local Runtime API (for its ClientApps)


def public_key_path(key: str | os.PathLike) -> Path:
    """Where `make_node_key` writes the public key of the private key `key`."""
    key = Path(key)
    return key.with_name(key.name + ".pub")


def make_node_key(path: str | os.PathLike) -> str:
    """Write a SuperNode authentication key pair: the private key at `path` (OpenSSH format,
    mode 0600) and the public key at `path.pub`. Returns the public key line to register."""
    path = Path(path)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    write_file(path, private, 0o600)
    write_file(public_key_path(path), (public + "\n").encode("ascii"), 0o644)
    return public


def supernode_command(
    server: str,
    store: str | os.PathLike,
    root_certificates: str | os.PathLike | None,
    key: str | os.PathLike | None,
    insecure: bool = False,
    *,
    runtime_port: int = RUNTIME_PORT,
    egress_log: str | os.PathLike | None = None,
    max_wait_time: float | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The `flower-supernode` argv connecting to the SuperLink at `server` (HOST:PORT).

    Secure by default: TLS (verified against `root_certificates`, or the system's CAs when
    None) and SuperNode authentication with the private key `key`. `insecure` drops both (a
    SuperNode then registers itself, which a SuperLink with authentication refuses).
    The device's store reaches the ClientApp as `context.node_config["store"]`, an absolute
    path. `runtime_port` is the SuperNode's local Runtime API: one per SuperNode on a host.
    `egress_log`: a file the ClientApp appends a summary of every message it sends to
    (`context.node_config["egress-log"]`, see `fedrec.client.egress_log`).
    """
    _check_address(server)
    node_config = f"store='{_node_config_path(store, '--store')}'"
    if egress_log is not None:
        node_config += f" egress-log='{_node_config_path(egress_log, '--egress-log')}'"
    argv = [flower_executable("flower-supernode"), "--superlink", server,
            "--node-config", node_config, "--port", str(runtime_port)]
    if insecure:
        if root_certificates is not None or key is not None:
            flag = "--root-certificates" if root_certificates is not None else "--key"
            raise ConfigError(f"--insecure turns TLS off, and Flower authenticates SuperNodes only "
                              f"over TLS: drop {flag}, or --insecure")
        argv.append("--insecure")
    else:
        if key is None:
            raise ConfigError("a SuperNode authenticates with a key: make one with "
                              "`fedrec client keygen --out FILE` and register FILE.pub on the "
                              "server, then pass --key FILE (or --insecure for a test federation)")
        if root_certificates is not None:
            argv += ["--root-certificates", str(_existing(root_certificates, "--root-certificates"))]
        argv += ["--auth-supernode-private-key", str(_existing(key, "--key"))]
    if max_wait_time is not None:
        argv += ["--max-wait-time", str(max_wait_time)]
    return argv + list(extra_args or [])


def _node_config_path(path: str | os.PathLike, flag: str) -> str:
    """`path` made absolute, checked to pass through Flower's --node-config (a TOML literal
    string)."""
    absolute = str(Path(path).expanduser().resolve())
    if "'" in absolute or any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in absolute):
        raise ConfigError(f"{flag} {absolute!r}: a path with a quote or a control character "
                          "cannot pass through Flower's --node-config (a TOML literal string)")
    return absolute


def _existing(path: str | os.PathLike, flag: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    return path.resolve()


def _check_address(server: str) -> None:
    host, sep, port = server.rpartition(":")
    if not sep or not host or "://" in server or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--server {server!r}: expected HOST:PORT (no scheme), e.g. "
                          "example.org:8000")
