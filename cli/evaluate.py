"""`fedrec evaluate`: re-evaluate a run's model with the one protocol."""

from __future__ import annotations

from typing import Annotated

import typer

from fedrec.cli.options import RunDir


def evaluate(
    run: RunDir,
    stage: Annotated[str, typer.Option(help="test or valid.")] = "test",
) -> None:
    """Rank the full catalog for every user and print HR/NDCG/Recall/MRR/coverage/diversity."""
    from fedrec.cli.output import format_table
    from fedrec.cli.served import load_run
    from fedrec.common.errors import ConfigError
    from fedrec.common.evaluate import evaluate as evaluate_stage
    from fedrec.common.evaluate import evaluate_cold
    from fedrec.common.experiment import HEADLINE

    if stage not in ("test", "valid"):
        raise ConfigError(f"--stage {stage}: expected 'test' or 'valid'")
    loaded = load_run(run)
    prepared = loaded.prepared
    metrics = evaluate_stage(loaded.model, prepared.split, stage, prepared.item_embeddings)
    metrics.update(evaluate_cold(loaded.model, prepared.split))
    columns = HEADLINE + ["cold_hr@10", "cold_random_hr@10", "users"]
    typer.echo(format_table([{"model": loaded.label, **metrics}], columns))
