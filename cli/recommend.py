"""`fedrec recommend`: top-k for one user from a run's model, optionally explained."""

from __future__ import annotations

import difflib
import re
from typing import Annotated

import numpy as np
import typer

from fedrec.cli.options import RunDir


def recommend(
    run: RunDir,
    user: Annotated[str, typer.Option(help="External user id as in the data set (synthetic "
                                           "sets: u000001, u000002, ...).")],
    k: Annotated[int, typer.Option(help="How many items.")] = 10,
    explain: Annotated[bool, typer.Option(help="Show the history items behind each pick.")] = False,
) -> None:
    """Recommend unseen items for a user, from all the user's known history."""
    from fedrec.cli.served import load_run
    from fedrec.common.errors import ConfigError
    from fedrec.common.text import printable

    if k < 1:
        raise ConfigError(f"--k {k}: expected a positive integer")
    loaded = load_run(run)
    data, split = loaded.prepared.dataset, loaded.prepared.split
    u = user_index(data, user)
    history = split.history(u, "test")
    if split.test_items[u] >= 0:
        history = list(history) + [int(split.test_items[u])]
    unseen = data.num_items - len(np.unique(np.asarray(history, np.int64)))
    top = (f"top {k:,}" if k <= unseen
           else f"top {unseen:,} (all unseen items; --k {k} asked)")
    titles = [printable(t) for t in data.item_titles]
    typer.echo(f"user {printable(user)}: {len(history)} items in history; {top}:")
    for rank, (item, score) in enumerate(loaded.model.recommend(u, history, k), 1):
        typer.echo(f"{rank:3d}. {titles[item]}  (score {score:.3f})")
        if explain:
            because = loaded.model.explain(item, history)
            if because:
                names = ", ".join(f"{titles[j]} ({s:.2f})" for j, s in because)
                typer.echo(f"       because you liked: {names}")
            else:
                typer.echo("       popular with everyone (no per-user signal)")


def user_index(data, user: str) -> int:
    """The dense index of external user id `user` in `data`; an unknown id is an error that
    shows what the data set's ids look like and the closest one."""
    from fedrec.common.errors import FedrecError
    from fedrec.common.text import printable

    try:
        return data.user_index(user)
    except FedrecError as exc:
        ids = data.user_ids.astype(str)
        examples = ", ".join(printable(i) for i in ids[:3])
        closest = closest_id(str(user), ids)
        hint = f"; did you mean '{printable(closest)}'?" if closest else ""
        raise FedrecError(f"{exc} ({len(ids):,} users; ids look like {examples}){hint}") from None


def closest_id(user: str, ids: np.ndarray) -> str | None:
    """The id in `ids` a user most likely meant by `user`: one with the same number and, if
    `user` has one, the same prefix (`5` or `u0005` -> `u000005`), else the most similar
    spelling, else None."""
    numbered = re.compile(r"(\D*?)0*(\d+)")
    asked = numbered.fullmatch(user.strip())
    if asked:
        prefix, number = asked[1].lower(), int(asked[2])
        for candidate in ids:
            found = numbered.fullmatch(candidate)
            if found and int(found[2]) == number and prefix in ("", found[1].lower()):
                return str(candidate)
    near = difflib.get_close_matches(user, list(ids), n=1, cutoff=0.6)
    return near[0] if near else None
