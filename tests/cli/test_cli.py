"""The `fedrec` command as a user sees it: help is fast and light, errors are one line."""

import os
import subprocess
import sys

import pytest

from fedrec.cli.main import main


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "fedrec.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_help_lists_every_command_and_imports_no_heavy_library():
    code = (
        "import sys; from fedrec.cli.main import app; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'flwr', 'pandas') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
    result = run("--help")
    assert result.returncode == 0
    for command in ("data", "embed", "train", "evaluate", "recommend"):
        assert command in result.stdout


def test_unknown_dataset_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "info", "--dataset", "no-such-set"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no-such-set" in err[0]


def test_bad_option_value_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--name", "x", "--users", "5"])
    assert exit_info.value.code == 2
    assert "--users 5" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "data", "info", "--dataset", "no-such-set",
                 env={"FEDREC_HOME": str(tmp_path)})
    assert result.returncode != 0 and "Traceback" in result.stderr
    result = run("data", "info", "--dataset", "no-such-set", env={"FEDREC_HOME": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, named", [
    (["--dp", "central"], "privacy.mode = 'central'"),
    (["--dp", "record", "--epsilon", "0"], "privacy.epsilon = 0.0"),
    (["--dp", "user", "--delta", "2"], "privacy.delta = 2.0"),
    (["--dp", "user", "--accountant", "gdp"], "privacy.accountant = 'gdp'"),
    (["--secagg", "--clients-per-round", "10", "--secagg-dropout", "0.95"], "secagg_dropout"),
    (["--secagg", "--clients-per-round", "2"], "at least 3 clients"),
])
def test_bad_privacy_settings_are_named_before_anything_runs(tmp_path, monkeypatch, capsys,
                                                             args, named):
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "run"), *args])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_privacy_report_shows_users_unique_before_and_after_generalization(
        tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("FEDREC_HOME", str(tmp_path))
    main(["data", "synth", "--name", "people", "--users", "300", "--items", "40"])
    capsys.readouterr()
    main(["data", "privacy-report", "--dataset", "people", "--out", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "dropped as direct identifiers: user id, name, email" in out
    report = json.loads((tmp_path / "r.json").read_text())
    before, after = report["rows"][0], report["rows"][-1]
    assert before["unique"] == before["users"] == 300
    assert after["unique"] == 0 and after["k"] >= 5
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_a_devices_pseudonym_rotates_on_request(tmp_path, capsys):
    from fedrec.client.store import DeviceStore

    device = str(tmp_path / "device.sqlite")
    DeviceStore(device).close()
    main(["client", "pseudonym", "--store", device])
    first = capsys.readouterr().out.strip()
    main(["client", "pseudonym", "--store", device])
    assert capsys.readouterr().out.strip() == first  # stable until rotated
    main(["client", "pseudonym", "--store", device, "--rotate"])
    old, new = capsys.readouterr().out.strip().split(" -> ")
    assert old == first != new and new.startswith("c-") and len(new) == 18
    main(["client", "pseudonym", "--store", device])
    assert capsys.readouterr().out.strip() == new


def test_pseudonym_of_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["client", "pseudonym", "--store", str(tmp_path / "nothing.sqlite")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("nothing.sqlite: no device store there")
    assert not (tmp_path / "nothing.sqlite").exists()
