"""`fedrec client pseudonym`: a device's pseudonymous identity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Manage a device's local state.", no_args_is_help=True)


@app.command("pseudonym")
def pseudonym(
    device: Annotated[Path, typer.Argument(help="The device's data directory (a simulated "
                                                 "device: RUN/clients/NNNNNN).")],
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace it with a fresh random "
                                                          "one.")] = False,
) -> None:
    """Print the pseudonym this device uses off the device, or rotate it."""
    from fedrec.client import identity
    from fedrec.common.errors import FedrecError

    if not device.is_dir():
        raise FedrecError(f"{device}: not a device directory")
    if rotate:
        old = identity.pseudonym(device)
        typer.echo(f"{old} -> {identity.rotate(device)}")
    else:
        typer.echo(identity.pseudonym(device))
