"""`fedrec runs compare`: metrics of several runs side by side, and NDCG@10 per round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Inspect and compare run directories.", no_args_is_help=True)


@app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    plot: Annotated[Path | None, typer.Option(help="PNG to write (default: beside the first run).")] = None,
) -> None:
    """Print the final metrics of each of RUNS (run directories) and plot NDCG@10 against the
    round."""
    from fedrec.cli.output import format_table
    from fedrec.common.errors import RunDirError
    from fedrec.common.experiment import HEADLINE
    from fedrec.common.jsonl import read_jsonl

    rows, curves = [], {}
    for run in runs:
        path = run / "metrics.json"
        if not path.exists():
            raise RunDirError(f"{run}: no metrics.json (not a finished run)")
        rows.append({"run": str(run), **json.loads(path.read_text())})
        history = [r for r in read_jsonl(run / "metrics.jsonl") if "ndcg@10" in r]
        if history:
            curves[str(run)] = ([r["round"] for r in history], [r["ndcg@10"] for r in history])
    typer.echo(format_table(rows, HEADLINE + ["selected_round", "rounds"], first="run"))
    if curves:
        target = plot or runs[0] / "compare-ndcg.png"
        _plot(curves, target)
        typer.echo(f"plot: {target}")


def _plot(curves: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()


    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
