"""The quickstart path on a slice of the real tweets with a small model (the full run is the
README's first command)."""

import pandas as pd

from dlforge import load
from dlforge.cli.quickstart import quickstart_config, run_quickstart
from dlforge.data.datasets import trump_tweets


def test_tweets_are_android_or_iphone():
    df = trump_tweets()
    assert set(df["source"]) == {"android", "iphone"} and len(df) > 8000
    assert df["text"].str.len().min() > 0


def test_quickstart_config_is_the_articles_model(tmp_path):
    cfg = quickstart_config(tmp_path / "t.csv")
    assert cfg["model"] == {"name": "transformer", "d_model": 512, "heads": 4, "layers": 1}
    assert cfg["inputs"][0]["vocab_size"] == 10_000
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (5, 64)


def test_quickstart_end_to_end_small(tmp_path, monkeypatch, capsys):
    import dlforge.cli.quickstart as qs

    real = trump_tweets()
    monkeypatch.setattr(qs, "trump_tweets", lambda: real.sample(400, random_state=0))

    def small(path, epochs=5):
        cfg = quickstart_config(path, epochs)
        cfg["model"] = {"name": "transformer", "d_model": 32, "heads": 4, "layers": 1}
        cfg["inputs"][0]["vocab_size"] = 500
        return cfg

    monkeypatch.setattr(qs, "quickstart_config", small)
    run_quickstart(tmp_path / "quickstart", epochs=1, verbose=0)
    out = capsys.readouterr().out
    assert "majority baseline" in out and "test" in out and "A few held-out tweets" in out
    assert f"dlforge predict {tmp_path / 'quickstart'}" in out
    clf = load(tmp_path / "quickstart")
    test = pd.read_csv(tmp_path / "quickstart-data" / "tweets_test.csv")
    assert len(test) == 60 and len(clf.predict(test["text"])) == 60
