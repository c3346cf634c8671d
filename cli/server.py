"""`fedrec server certs|start|register-node`: a SuperLink on Flower's deployment engine.

TLS and SuperNode authentication are on unless `--insecure`. Flower 1.41 serves the Fleet
API (SuperNodes), the Control API (`flwr run`, `flwr supernode register`) and the Runtime
API (the ServerApp) on one HTTPS port.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Run a federation's server (a Flower SuperLink).", no_args_is_help=True)

FlwrHome = Annotated[Path | None, typer.Option(
    "--flwr-home", help="Flower's home: its connections (config.toml) and installed apps "
    "(default: $FLWR_HOME, else ~/.flwr).")]


@app.command("certs")
def certs(
    out: Annotated[Path, typer.Option("--out", help="Directory for ca.pem, ca.key, server.pem, "
                                                    "server.key.")],
    host: Annotated[list[str], typer.Option(
        "--host", help="A name or IP address the SuperNodes reach this server by (repeat it). "
        "127.0.0.1 and localhost are always included.")],
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    force: Annotated[bool, typer.Option("--force", help="Replace existing certificates (every "
                                                        "device must then get the new ca.pem).")] = False,
) -> None:
    """Make a certificate authority and a server certificate signed by it."""
    from fedrec.common.errors import ConfigError
    from fedrec.server import deploy

    existing = [p for p in (out / deploy.CA_CERT, out / deploy.SERVER_CERT) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]}: exists; pass --force to replace the certificates")
    made = deploy.make_certificates(out, host, days)
    typer.echo(f"CA certificate (give it to every device, as --root-certificates): {made.ca_cert}")
    typer.echo(f"server certificate and key: {made.server_cert}, {made.server_key}")
    typer.echo(f"CA key (keep it offline; it signs server certificates): {made.ca_key}")


@app.command("start")
def start(
    certs: Annotated[Path | None, typer.Option(
        "--certs", help="Directory made by `fedrec server certs`.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="No TLS and no SuperNode authentication (a test federation only).")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Fleet, Control and Runtime APIs.")] = 8000,
    database: Annotated[Path | None, typer.Option(
        help="SQLite file for the SuperLink's state; registered SuperNodes survive a restart "
        "only with it (default: in memory).")] = None,
    flwr_home: FlwrHome = None,
    workdir: Annotated[Path | None, typer.Option(
        help="Working directory of the SuperLink, and so of every ServerApp it starts: a "
        "relative run-dir lands here (default: the current directory).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command; start nothing.")] = False,
) -> None:
    """Start the SuperLink in the foreground; write the flwr connection 'fedrec' (for `flwr run`
    and `fedrec server register-node` on this machine)."""
    from fedrec.common.deploy import flwr_home as resolve_home
    from fedrec.common.deploy import process_env
    from fedrec.common.errors import ConfigError
    from fedrec.server import deploy

    if certs is None and not insecure:
        raise ConfigError("no --certs: the server uses TLS by default; make certificates with "
                          "`fedrec server certs --out DIR --host <this server's name>` and pass "
                          "--certs DIR (or --insecure for a test federation)")
    if certs is not None and insecure:
        raise ConfigError("--certs and --insecure: choose one")
    if workdir is not None and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: not a directory")
    found = None if insecure else deploy.certificates_in(certs)
    argv = deploy.superlink_command(found, host=host, port=port, insecure=insecure, database=database)
    if dry_run:
        typer.echo(shlex.join(argv))
        return
    home = resolve_home(flwr_home)
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    address = f"[{local}]:{port}" if ":" in local else f"{local}:{port}"
    config = deploy.write_connection(home, address, None if insecure else found.ca_cert,
                                     insecure=insecure)
    typer.echo(f"flwr connection '{deploy.CONNECTION_NAME}' -> {address} written to {config}",
               err=True)
    env = process_env(home)  # absolute paths from here on: the working directory changes
    if workdir is not None:
        os.chdir(workdir)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


@app.command("register-node")
def register_node(
    public_key: Annotated[Path, typer.Argument(help="The device's public key (the .pub file of "
                                                    "`fedrec client keygen`).")],
    connection: Annotated[str, typer.Option(
        help="The flwr connection of the SuperLink (written by `fedrec server start`).")] = "fedrec",
    flwr_home: FlwrHome = None,
) -> None:
    """Register a SuperNode's public key (PUBLIC_KEY: the .pub file of `fedrec client keygen`)
    with the running SuperLink; print its node id."""
    from fedrec.common.deploy import flwr_home as resolve_home
    from fedrec.server import deploy

    node_id = deploy.register_node(public_key, resolve_home(flwr_home), connection)
    typer.echo(f"registered {public_key} as node {node_id}")
