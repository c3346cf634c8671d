"""`fedrec client`: a device's local state (privacy spend, pseudonym) and its SuperNode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Manage a device's local state.", no_args_is_help=True)


@app.command("pseudonym")
def pseudonym(
    store: Annotated[Path | None, typer.Option("--store", help="The device store file (default: "
                                                "device.sqlite in the user's app data "
                                                "directory).")] = None,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace it with a fresh random "
                                                          "one.")] = False,
) -> None:
    """Print the pseudonym this device uses off the device, or rotate it."""
    from fedrec.client.store import DeviceStore

    with DeviceStore(store, create=False) as device:
        if rotate:
            old = device.pseudonym()
            typer.echo(f"{old} -> {device.rotate_pseudonym()}")
        else:
            typer.echo(device.pseudonym())


@app.command("privacy")
def privacy_status(
    store: Annotated[Path | None, typer.Option("--store", help="The device store file (default: "
                                                "device.sqlite in the user's app data "
                                                "directory).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What this device has spent: record-level ε at δ (each training window of the user's
    interactions protected), its budget and what remains, and its releases."""
    import json
    from dataclasses import asdict

    from fedrec.client.sdk import FedrecClient
    from fedrec.client.store import DeviceStore

    DeviceStore(store, create=False).close()  # a clear error for a missing store
    with FedrecClient(store) as device:
        status = device.privacy_status()
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=1))
        return
    typer.echo(f"record-level DP: ε = {status.epsilon_spent:.3g} spent of "
               f"{status.epsilon_budget:g} (remaining {status.epsilon_remaining:.3g}) at "
               f"δ = {status.delta:g} ({status.accountant}); {status.releases} releases; "
               f"pseudonym {status.pseudonym}")


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Private key file to write (mode 0600); the "
                                                    "public key goes to FILE.pub.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key (the server "
                                                        "must then register the new one).")] = False,
) -> None:
    """Make this device's SuperNode authentication key; print the public key to register."""
    from fedrec.client import deploy
    from fedrec.common.errors import ConfigError

    if out.exists() and not force:
        raise ConfigError(f"{out}: exists; pass --force to replace this device's key")
    public = deploy.make_node_key(out)
    typer.echo(public)
    typer.echo(f"private key: {out}; public key: {deploy.public_key_path(out)} — register it on the "
               f"server: fedrec server register-node {deploy.public_key_path(out).name}", err=True)


@app.command("start")
def start(
    server: Annotated[str, typer.Option("--server", help="The SuperLink as HOST:PORT.")],
    store: Annotated[Path, typer.Option("--store", help="The device store file the ClientApp uses.")],
    root_certificates: Annotated[Path | None, typer.Option(
        "--root-certificates", help="The server's CA certificate (ca.pem of `fedrec server "
        "certs`; default: the system's CAs).")] = None,
    key: Annotated[Path | None, typer.Option(
        "--key", help="This device's private key (`fedrec client keygen`), registered on the "
        "server.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="No TLS (a test federation only).")] = False,
    runtime_port: Annotated[int, typer.Option(
        help="Local port of this SuperNode's Runtime API (one per SuperNode on a machine).")] = 9094,
    flwr_home: Annotated[Path | None, typer.Option(
        "--flwr-home", help="Where Flower installs the apps this device runs (default: "
        "$FLWR_HOME, else ~/.flwr).")] = None,
    egress_log: Annotated[Path | None, typer.Option(
        "--egress-log", help="Append a summary of every message this device sends to this file "
        "(JSON lines; check it with `fedrec audit RUN --egress-log FILE`).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command; start nothing.")] = False,
) -> None:
    """Connect this device to a federation: run a Flower SuperNode in the foreground."""
    import os
    import shlex
    import sys

    from fedrec.client import deploy
    from fedrec.common.deploy import flwr_home as resolve_home
    from fedrec.common.deploy import process_env
    from fedrec.common.errors import ConfigError

    if not store.expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--store {store}: its directory does not exist")
    if egress_log is not None and not egress_log.expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--egress-log {egress_log}: its directory does not exist")
    argv = deploy.supernode_command(server, store, root_certificates, key, insecure,
                                    runtime_port=runtime_port, egress_log=egress_log)
    if dry_run:
        typer.echo(shlex.join(argv))
        return
    sys.stdout.flush()
    os.execvpe(argv[0], argv, process_env(resolve_home(flwr_home)))
