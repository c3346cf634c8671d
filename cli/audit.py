"""`fedrec audit RUN_DIR` (privacy report, exit code 1 on any failure) and
`fedrec audit attack CONFIG` (the empirical membership attack)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FORMATS = ("md", "html", "json")


def audit(
    target: Annotated[str, typer.Argument(help="A run directory (or a directory of runs: a "
                                               "sweep), or 'attack' followed by a config.")],
    config: Annotated[Path | None, typer.Argument(help="With 'attack': the run config "
                                                       "(config.toml) to attack.")] = None,
    format: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    out: Annotated[Path | None, typer.Option(help="Report file (default: RUN/report.FORMAT; "
                                                  "plots beside it).")] = None,
    egress_log: Annotated[Path | None, typer.Option(help="The clients' egress log (default: "
                                                         "RUN/egress.jsonl if present).")] = None,
    trials: Annotated[int, typer.Option(help="With 'attack': canary trials per setting (200: "
                                             "100 guesses, which can prove ε up to 3.5).")] = 200,
) -> None:
    """Audit a run's privacy: the promise, what was spent, an independent recomputation of
    every ε (dp-accounting), and the egress log against the allow-list."""
    from fedrec.common.errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    if target == "attack":
        if config is None:
            raise ConfigError("fedrec audit attack CONFIG: give the run config to attack")
        from fedrec.simulation.attack import run_attack_cli

        if trials < 4:
            raise ConfigError(f"--trials {trials}: expected at least 4")
        run_attack_cli(config, out, trials)
        return
    from fedrec.simulation import audit as auditing
    from fedrec.simulation.audit_report import render

    run = Path(target)
    if not run.is_dir():
        raise ConfigError(f"{run}: not a run directory")
    report = auditing.audit_sweep(run) if auditing.is_sweep(run) else auditing.audit(run, egress_log)
    written = render(report, format, out or run / f"report.{format}")
    failures = [f for r in report.get("runs", [report]) for f in r["findings"]
                if f["severity"] == "failure"]
    typer.echo(f"verdict: {report['verdict'].upper()}" + (f" ({len(failures)} failures)"
                                                           if failures else ""))
    for f in failures[:10]:
        typer.echo(f"  - {f['what']}" + (f" (ledger line {f['line']})" if f["line"] else ""))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
    if report["verdict"] == "fail":
        raise typer.Exit(1)
