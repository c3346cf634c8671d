"""The `fedrec` command. Subcommands live one per module and import heavy libraries lazily,
so `fedrec --help` stays fast. User errors print one line and exit with code 2."""

from __future__ import annotations

import sys

import typer

from fedrec.cli import audit, client, data, embed, evaluate, recommend, runs, simulate, train

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
app.add_typer(runs.app, name="runs")
app.add_typer(client.app, name="client")
app.command("audit")(audit.audit)

_debug = {"on": False}


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

        if _debug["on"] or "--debug" in (argv or sys.argv) or not isinstance(exc, FedrecError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
