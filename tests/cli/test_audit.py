"""`fedrec audit --help` describes both arguments and shows how to run the membership attack."""

import re

import pytest


def help_text(fedrec_cli, *argv) -> str:
    code, out, _ = fedrec_cli(*argv, "--help")
    assert code == 0
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())  # the words, unwrapped


def test_audit_help_describes_both_arguments_and_the_attack(fedrec_cli):
    text = help_text(fedrec_cli, "audit")
    assert "fedrec audit attack CONFIG" in text
    assert "TARGET a run directory (or a directory of runs, a sweep)" in text
    assert "TARGET a device's store file" in text
    assert "TARGET 'attack' and CONFIG a run config (config.toml)" in text
    assert "fedrec audit attack CONFIG" in help_text(fedrec_cli)  # listed with the commands


def test_a_second_argument_without_attack_is_refused(fedrec_cli, tmp_path):
    code, _, err = fedrec_cli("audit", str(tmp_path), str(tmp_path / "config.toml"))
    assert code == 2 and "only follows 'attack'" in err


@pytest.mark.parametrize("argv", [["runs", "compare"], ["server", "register-node"]])
def test_other_arguments_are_described_too(fedrec_cli, argv):
    text = help_text(fedrec_cli, *argv)
    assert {"runs": "RUNS (run directories)", "server": "PUBLIC_KEY: the .pub file"}[argv[0]] in text
