import json

import pytest

from fedrec.cli.main import main


def fake_run(path, ndcgs):
    path.mkdir()
    rows = [{"round": 5 * i, "ndcg@10": v, "hr@10": 2 * v} for i, v in enumerate(ndcgs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "metrics.json").write_text(json.dumps({**rows[-1], "rounds": rows[-1]["round"]}))


def test_compare_prints_each_run_and_plots_ndcg_per_round(tmp_path, capsys):
    fake_run(tmp_path / "a", [0.01, 0.02, 0.03])
    fake_run(tmp_path / "b", [0.01, 0.04])
    main(["runs", "compare", str(tmp_path / "a"), str(tmp_path / "b"),
          "--plot", str(tmp_path / "cmp.png")])
    out = capsys.readouterr().out
    assert "0.0300" in out and "0.0400" in out
    png = (tmp_path / "cmp.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_compare_rejects_an_unfinished_run(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["runs", "compare", str(tmp_path / "x")])
    assert exc.value.code == 2 and "no metrics.json" in capsys.readouterr().err
