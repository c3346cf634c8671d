"""`fedrec train` and `fedrec embed` show what they are doing: the bar moves every epoch with the
latest validation metric, and embedding the catalog says what it embeds."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory, synthetic_home):
    with synthetic_home(tmp_path_factory.mktemp("train"), "tiny", num_users=60, num_items=40,
                        interactions_per_user=10) as root:
        yield root


class Bars:
    """Stands in for `fedrec.cli.output.progress_bar`: records (n, postfix) at every refresh."""

    def __init__(self):
        self.updates: dict[str, list[tuple[int, dict]]] = {}

    def __call__(self, total, desc):
        updates = self.updates.setdefault(desc, [])

        class Bar:
            n = 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def set_postfix(self, values, refresh=True):
                updates.append((self.n, dict(values)))

            def refresh(self):
                updates.append((self.n, {}))

        bar = Bar()
        bar.total = total
        return bar


@pytest.mark.parametrize("model", ["fedrec", "bpr"])
def test_the_bar_advances_every_epoch_with_the_last_validation_metric(home, fedrec_cli,
                                                                      monkeypatch, model):
    import fedrec.cli.output

    bars = Bars()
    monkeypatch.setattr(fedrec.cli.output, "progress_bar", bars)
    code, _, _ = fedrec_cli("train", "--dataset", "tiny", "--model", model, "--epochs", "7")
    assert code == 0
    updates = bars.updates[f"train {model}"]
    assert sorted({n for n, _ in updates}) == list(range(1, 8))  # every epoch, in order
    assert [n for n, _ in updates] == sorted(n for n, _ in updates)
    # validation after epochs 5 and 7 (the last): shown from then on, with every epoch
    last = dict(updates)  # each epoch's final postfix
    assert all("valid_ndcg@10" not in last[n] for n in range(1, 5))
    assert all({"loss", "valid_ndcg@10"} <= set(last[n]) for n in range(5, 8))


def test_embedding_the_catalog_says_what_it_embeds(tmp_path, synthetic_home, fedrec_cli):
    with synthetic_home(tmp_path, "fresh", num_users=20, num_items=120, interactions_per_user=5):
        code, out, err = fedrec_cli("embed", "--dataset", "fresh")
        assert code == 0 and out.startswith("encoded: 120 items")
        assert "embedding 120 item texts with all-MiniLM-L6-v2" in err
        assert "Loading weights" not in err  # the encoder library's unlabelled bar
        code, out, err = fedrec_cli("embed", "--dataset", "fresh")
        assert out.startswith("cache hit") and "embedding" not in err
