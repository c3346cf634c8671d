"""`fedrec plan`: what `flwr run` submits — a Flower app directory for the fedrec apps and the
run config (the run plan and the run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedrec.cli.options import Dataset


def plan(
    out: Annotated[Path, typer.Option(
        help="A directory for the Flower app (pyproject.toml) and its run config (run.toml).")],
    config: Annotated[Path | None, typer.Option(
        help="A fedrec config.toml ([federation], [privacy], ...); default: the defaults.")] = None,
    dataset: Annotated[str | None, Dataset] = None,
    clients: Annotated[int | None, typer.Option(
        help="Deployment: the number of devices (SuperNodes) the run waits for and samples "
        "from. Omit with --simulation.")] = None,
    simulation: Annotated[bool, typer.Option(
        "--simulation", help="A simulation by `flwr run`: one virtual device per user of the "
        "data set, central evaluation in the run directory.")] = False,
    run_dir: Annotated[Path, typer.Option(
        help="The ServerApp's run directory (on the server machine).")] = Path("runs/flwr"),
) -> None:
    """Write a Flower app and its run config: `flwr run OUT <connection> --run-config
    OUT/run.toml --stream` then runs fedrec's ServerApp and ClientApps (the installed package's
    code: the app directory only declares them)."""
    from dataclasses import replace

    import tomli_w

    from fedrec.common import atomic
    from fedrec.common import config as cfgmod
    from fedrec.common.errors import ConfigError
    from fedrec.common.experiment import prepare
    from fedrec.common.plan import (
        DEVICES_KEY,
        ENGINE_KEY,
        RUN_DIR_KEY,
        SERVER_HOOKS_KEY,
        app_description,
    )
    from fedrec.common.text import printable
    from fedrec.simulation.run import build_plan

    cfg = cfgmod.load(config) if config else cfgmod.RunConfig()
    if dataset:
        cfg = replace(cfg, dataset=dataset)
    cfg.validate()
    if simulation == (clients is not None):
        raise ConfigError("give either --clients N (a deployment of N devices) or --simulation")
    cohort_option = (f"federation.clients_per_round = {cfg.federation.clients_per_round} "
                     f"({config or 'the default'})")
    if clients is not None:
        if clients < 1:
            raise ConfigError(f"--clients {clients}: expected at least 1 device")
        cfg.federation.check_population(clients, cohort_option, "devices of --clients")
    run_config = {RUN_DIR_KEY: str(run_dir.resolve())}
    if simulation:  # `flwr run` delivers one message per client: Flower's engine
        cfg = replace(cfg, federation=replace(cfg.federation, engine="ray"))
        run_config.update({DEVICES_KEY: "fedrec.simulation.devices:open_device",
                           SERVER_HOOKS_KEY: "fedrec.simulation.run:server_hooks",
                           ENGINE_KEY: "ray"})
    prepared = prepare(cfg, progress=False)
    if simulation:
        cfg.federation.check_population(prepared.split.num_users, cohort_option,
                                        f"users of data set '{printable(cfg.dataset)}' (one "
                                        "client each)")
    the_plan = build_plan(cfg, prepared, clients)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "pyproject.toml", app_description())
    atomic.write_text(out / "run.toml", tomli_w.dumps(the_plan.to_run_config(**run_config)))
    typer.echo(f"{out}: {the_plan.num_clients} clients, {the_plan.cohort} per round, "
               f"{cfg.federation.rounds} rounds, privacy {the_plan.privacy.mode}, SecAgg+ "
               f"{'on' if the_plan.secagg else 'off'}; submit with `flwr run {out} <connection> "
               f"--run-config {out / 'run.toml'} --stream`")
