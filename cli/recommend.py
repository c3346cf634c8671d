"""`fedrec recommend`: top-k for one user from a trained run, optionally explained."""

from __future__ import annotations

from typing import Annotated

import typer

from fedrec.cli.options import RunDir


def recommend(
    run: RunDir,
    user: Annotated[str, typer.Option(help="External user id as in the data set.")],
    k: Annotated[int, typer.Option(help="How many items.")] = 10,
    explain: Annotated[bool, typer.Option(help="Show the history items behind each pick.")] = False,
) -> None:
    """Recommend unseen items for a user, from all the user's known history."""
    from fedrec.common.errors import ConfigError
    from fedrec.common.experiment import load_run

    if k < 1:
        raise ConfigError(f"--k {k}: expected a positive integer")
    _, prepared, model = load_run(run)
    data, split = prepared.dataset, prepared.split
    u = data.user_index(user)
    history = split.history(u, "test")
    if split.test_items[u] >= 0:
        history = list(history) + [int(split.test_items[u])]
    titles = data.item_titles
    typer.echo(f"user {user}: {len(history)} items in history; top {k}:")
    for rank, (item, score) in enumerate(model.recommend(u, history, k), 1):
        typer.echo(f"{rank:3d}. {titles[item]}  (score {score:.3f})")
        if explain:
            because = model.explain(item, history)
            if because:
                names = ", ".join(f"{titles[j]} ({s:.2f})" for j, s in because)
                typer.echo(f"       because you liked: {names}")
            else:
                typer.echo("       popular with everyone (no per-user signal)")
