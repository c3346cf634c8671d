"""`fedrec audit RUN_DIR` or `fedrec audit STORE` (privacy report of a run or of a device's
store, exit code 1 on any failure) and `fedrec audit attack CONFIG` (the empirical membership
attack)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

FORMATS = ("md", "html", "json")


# The docstring describes the arguments: with click 8.5, typer 0.20 loses an argument's
# `help=` (click's new `Argument.help` overwrites it), so the table shows none.
def audit(
    target: Annotated[str, typer.Argument(
        help="A run directory, a directory of runs (a sweep), a device's store file, or the "
        "word 'attack' (then CONFIG).")],
    config: Annotated[Path | None, typer.Argument(
        help="With 'attack' only: the run config (config.toml) to attack.")] = None,
    format: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    out: Annotated[Path | None, typer.Option(help="Report file (default: RUN/report.FORMAT, "
                                                  "or STORE-audit.FORMAT beside a store; plots "
                                                  "beside it).")] = None,
    egress_log: Annotated[Path | None, typer.Option(help="The clients' egress log (default: "
                                                         "RUN/egress.jsonl if present).")] = None,
    trials: Annotated[int, typer.Option(help="With 'attack': canary trials per setting (200: "
                                             "100 guesses, which can prove ε up to 3.5).")] = 200,
) -> None:
    """Audit a run's or a device's privacy (TARGET), or attack one: `fedrec audit attack CONFIG`.

    TARGET a run directory (or a directory of runs, a sweep): the promise, what was spent, an
    independent recomputation of every ε (dp-accounting), and the egress log against the
    allow-list. Exit code 1 on any failure.

    TARGET a device's store file (RUN/clients/000017.sqlite): its ledger against its privacy
    account, every ε recomputed. Exit code 1 on any failure.

    TARGET 'attack' and CONFIG a run config (config.toml): the empirical membership attack on
    the updates this device code releases (--trials canaries per setting); writes attack.json
    and attack.png beside CONFIG (or --out)."""
    from fedrec.common.errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    if target != "attack" and config is not None:
        raise ConfigError(f"{config}: a second argument only follows 'attack' (fedrec audit "
                          "attack CONFIG)")
    if target == "attack":
        if config is None:
            raise ConfigError("fedrec audit attack CONFIG: give the run config to attack")
        if trials < 4:
            raise ConfigError(f"--trials {trials}: expected at least 4")
        attack(config, out, trials)
        return
    from fedrec.audit import device
    from fedrec.audit import run as auditing
    from fedrec.audit.report import render

    path = Path(target)
    if path.is_file():  # a device's store
        if egress_log is not None:
            raise ConfigError("--egress-log: a run's option; a device store has no egress log")
        report = device.audit_device(path)
        default_out = path.with_name(f"{path.stem}-audit.{format}")
    elif path.is_dir():
        report = (auditing.audit_sweep(path) if auditing.is_sweep(path)
                  else auditing.audit(path, egress_log))
        default_out = path / f"report.{format}"
    else:
        raise ConfigError(f"{path}: no run directory or device store there")
    written = render(report, format, out or default_out)
    findings = [f for r in report.get("runs", [report]) for f in r["findings"]]
    failures = [f for f in findings if f["severity"] == "failure"]
    notes = sum(f["severity"] != "failure" for f in findings)
    typer.echo(f"verdict: {report['verdict'].upper()}" + (f" ({len(failures)} failures)"
                                                           if failures else "")
               + (f"; {notes} notes and warnings in the report" if notes else ""))
    for f in failures[:10]:
        typer.echo(f"  - {f['what']}" + (f" (ledger line {f['line']})" if f["line"] else ""))
    ran_out = (report.get("spent") or {}).get("budget_exhausted_after_round")
    if ran_out is not None:
        typer.echo(f"the federation's privacy budget ran out after round {ran_out}")
    typer.echo("wrote " + ", ".join(str(p) for p in written))
    if report["verdict"] == "fail":
        raise typer.Exit(1)


def attack(config_path: Path, out: Path | None, trials: int) -> dict:
    """`fedrec audit attack CONFIG`: the membership attack on the updates this device code
    releases; prints the table and writes JSON + PNG (default: next to the config,
    `attack.json` / `attack.png`)."""
    from fedrec.audit.attack import attack_all, plot, table
    from fedrec.client.attack_target import DeviceUpdates
    from fedrec.common import atomic, config

    cfg = config.load(Path(config_path)).validate()
    report = attack_all(cfg, DeviceUpdates, trials=trials)
    out = Path(out) if out else Path(config_path).with_name("attack.json")
    atomic.write_text(out, json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    typer.echo(table(report))
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")
    return report
