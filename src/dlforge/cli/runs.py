"""``dlforge evaluate``, ``predict`` and ``info``: what a run scores, predicts and is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.cli.report import cv_summary, metrics_table
from dlforge.cli.seq2seq import report_metrics, report_scores
from dlforge.estimators import files

__all__ = ["COMMANDS"]

COMMANDS = Commands()


# ----------------------------------------------------------------------------------- evaluate
@COMMANDS(epilog=_examples(
    "dlforge evaluate runs/tweets --data test.csv",
    "dlforge evaluate runs/tweets --data test.jsonl --text body --label tag --json",
))
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    data: Annotated[str, typer.Option(help="A labelled file to score.")],
    text: Annotated[str | None, typer.Option(
        help="Text column (default: as trained; a seq2seq run's source column).")] = None,
    label: Annotated[str | None, typer.Option(
        help="Label column (default: as trained; a seq2seq run's target column).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score a run on a labelled file, next to the majority-class baseline."""
    metrics = files.evaluate(run_dir, data, text=text, label=label)
    if metrics.get("task") == "seq2seq":  # text to text: BLEU, chrF, exact match, copy
        if as_json:
            typer.echo(json.dumps(metrics, indent=2, default=str))
        else:
            report_scores(Path(data).name, metrics)
        return
    seen = metrics.get("overlap", {})
    if seen.get("rows"):
        typer.echo(overlap_warning(data, seen["rows"], seen["of"]), err=True)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    name = Path(data).name
    Console().print(metrics_table({name: metrics}, (name,)))
    per = metrics.get("per_class", {})
    for c, m in per.items():
        typer.echo(f"  {c}: precision {m['precision']:.4f}, recall {m['recall']:.4f}, "
                   f"f1 {m['f1']:.4f}, support {m['support']}")


def overlap_warning(data: str | Path, rows: int, of: int) -> str:
    """The line that says an evaluation file holds rows the model was fitted on."""
    return (f"warning: {rows:,} of {of:,} rows of {data} ({rows / max(of, 1):.0%}) are rows the "
            "model was trained or validated on, so the score below overestimates it; score a "
            "file it has not seen (or train with --test-split 0.2 for a held-out test score)")


# ----------------------------------------------------------------------------------- predict
@COMMANDS(epilog=_examples(
    "dlforge predict runs/tweets --data new.csv --out predictions.csv",
    "dlforge predict runs/tweets --data new.jsonl --text body --out predictions.parquet",
))
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    data: Annotated[str, typer.Option(
        help="A file with the input columns (or a folder of images).")],
    out: Annotated[Path, typer.Option(help="Where to write (.csv/.tsv/.jsonl/.parquet).")],
    text: Annotated[str | None, typer.Option(help="Text column (default: as trained).")] = None,
) -> None:
    """Predict a label (and class probabilities), or a number, for every row of a file."""
    result = files.predict(run_dir, data, out, text=text)
    typer.echo(f"wrote {len(result)} predictions to {out}")


# ----------------------------------------------------------------------------------- info
@COMMANDS(epilog=_examples("dlforge info runs/tweets", "dlforge info runs/tweets --json"))
def info(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show what a run is: model, size, data, labels and metrics."""
    d = files.info(run_dir)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    console = Console()
    if d["task"] == "seq2seq":
        m, data = d["metrics"], d["data"]
        console.print(f"[b]{d['path']}[/b]: sequence to sequence ({d['model']['name']}), "
                      f"created {d['created']} (dlforge {d['dlforge_version']})", soft_wrap=True)
        console.print(f"{d['parameters']:,} parameters; {data['pairs']:,} pairs from "
                      f"{data['source']} (splits {data['splits']}); best epoch "
                      f"{m['best_epoch']} of {m['epochs_run']}", soft_wrap=True)
        report_metrics(m)
        return
    if d["task"] == "causal_lm":  # a pretrained language model's fine-tune
        m, base = d["metrics"], d["model"]["base"]
        console.print(f"[b]{d['path']}[/b]: a {d['model']['name']} fine-tune of {base['path']} "
                      f"({base['architecture']}), created {d['created']}")
        console.print(f"{d['parameters']:,} parameters, {m['trained_parameters']:,} trained; "
                      f"{m['steps']} steps on {m['train_sequences']:,} sequences "
                      f"({m['supervised_share']:.0%} of tokens supervised)")
        b, a = m.get("val_before"), m.get("val_after")
        if a:
            console.print(f"validation perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}"
                          f", token accuracy {b['token_accuracy']:.3f} -> "
                          f"{a['token_accuracy']:.3f}")
        return
    model = (d["metrics"].get("model", "") if d["model"]["name"] == "baseline" else
             ", ".join(f"{k} {v}" for k, v in d["model"].items() if k != "name"))
    console.print(f"[b]{d['path']}[/b]: {d['task']}, created {d['created']} "
                  f"(dlforge {d['dlforge_version']})")
    console.print(f"model: {d['model']['name']} ({model}); {d['parameters']:,} parameters")
    share = d.get("baseline_weight")
    if isinstance(share, float) and share > 0 and d["model"]["name"] != "baseline":
        console.print(f"blend: predictions are {1 - share:g} this network and {share:g} the "
                      f"simple baseline ({d['metrics'].get('simple_baseline', {}).get('model')})")
    if d.get("privacy"):
        p = d["privacy"]
        console.print(f"differential privacy: ε = {p['epsilon']:.3g} at δ = {p['delta']:g} "
                      f"(DP-SGD, {p['accountant']} accountant, {p['steps']} steps)")
    if d["task"] == "language_model":
        m, data = d["metrics"], d["data"]
        console.print(f"data: {data['characters']:,} characters, {data['tokens']:,} "
                      f"{data['tokenizer']} tokens (train {data['train_tokens']:,}, val "
                      f"{data['val_tokens']:,})")
        console.print(f"val loss {m['val_loss']:.4f}, perplexity {m['val_perplexity']:.2f}, "
                      f"{m['val_bits_per_char']:.3f} bits/char at step {m['best_step']} of "
                      f"{m['steps']}")
        return
    labels = d["labels"]
    if d.get("forecast"):
        fc = d["forecast"]
        console.print(f"forecast: {', '.join(fc['targets'])}, {fc['horizon']} steps ahead from "
                      f"a window of {fc['window']}")
    else:
        console.print("inputs: " + ", ".join(f"{i['name']} ({i['type']})"
                                             for i in d["inputs"]))
        console.print(f"output: {labels['kind']} " + (
            str(labels["classes"]) if "classes" in labels
            else f"(mean {labels['mean']:.4g}, std {labels['std']:.4g})"))
    if d["data"]:
        console.print(f"data: {d['data'].get('source')}; splits {d['data'].get('splits')}")
    if d["model"]["name"] != "baseline":  # the simple baseline trains in one step
        console.print(f"best epoch {d['metrics'].get('best_epoch')} of "
                      f"{d['metrics'].get('epochs_run')} (monitor: val "
                      f"{d['metrics'].get('monitor')})")
    console.print(metrics_table(d["metrics"]))
    cv = cv_summary(d["metrics"])
    if cv:
        console.print(cv, soft_wrap=True)
    fair = d.get("fairness")
    if fair:
        if fair.get("verdict"):
            console.print(f"fairness: {fair['verdict']} by {', '.join(fair['attributes'])} "
                          f"(audited on {fair['data']})", soft_wrap=True)
        if fair.get("mitigation"):
            m = fair["mitigation"]
            console.print(f"mitigation: {m['constraint']} over {', '.join(m['columns'])}; "
                          "predict and serve need these columns", soft_wrap=True)

