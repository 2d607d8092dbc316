"""``dlforge explain``, ``audit`` and ``report``: why a run predicts what it does, whether it is
fair and private, and its model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dlforge._atomic import atomic_file
from dlforge._extras import require
from dlforge.audit.card import write_report
from dlforge.audit.charts import SHORT
from dlforge.audit.explain import EXPLAIN_FEATURE, render_html, render_terminal
from dlforge.audit.fairness import METRICS, Thresholds
from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.errors import ConfigError
from dlforge.estimators.load import load
from dlforge.estimators.steps import audit as run_audit
from dlforge.estimators.steps import explain as explain_one
from dlforge.estimators.steps import privacy_audit

__all__ = ["COMMANDS"]

COMMANDS = Commands()


# ----------------------------------------------------------------------------------- explain
@COMMANDS(epilog=_examples(
    "dlforge explain runs/tweets --text \"the flight was late again\"",
    "dlforge explain runs/tweets --text \"great crew\" --html why.html",
    "dlforge explain runs/digits --image seven.png --target 7",
    "dlforge explain runs/credit --row '{\"age\": 41, \"income\": 52000, \"home\": \"rent\"}'",
))
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    text: Annotated[str | None, typer.Option(help="A text to explain.")] = None,
    image: Annotated[str | None, typer.Option(help="An image file to explain.")] = None,
    row: Annotated[str | None, typer.Option(
        help="A table row as JSON, {\"column\": value, ...} (also the other inputs of a "
             "mixed model).")] = None,
    target: Annotated[str | None, typer.Option(
        help="The class to explain (default: the predicted one).")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Integration steps (default: from 50, doubled until the attributions add up to "
             "the output's change within 1%, at most 800); for a simple-baseline run, the "
             "sampled permutations of its Shapley values (default 25).")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write a highlighted HTML page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Explain one prediction with Integrated Gradients (Captum; baseline Shapley values for a
    simple-baseline run): which tokens, pixels or columns pushed the output, and by how
    much."""
    require("captum", "audit", EXPLAIN_FEATURE)
    values = None
    if row is not None:
        try:
            values = json.loads(row)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--row: not valid JSON ({err.msg} at character {err.pos}); "
                              "expected an object such as '{\"age\": 41}'") from None
        if not isinstance(values, dict):
            raise ConfigError(f"--row: expected a JSON object of column: value, got "
                              f"{type(values).__name__}")
    model = load(run_dir)
    if target is not None and getattr(getattr(model, "labels_", None), "classes", None):
        # A class given on the command line is a string; match it to the classes' own type.
        target = next((c for c in model.labels_.classes if str(c) == target), target)
    result = explain_one(model, text=text, image=image, row=values, target=target,
                         steps=steps)
    if html is not None:
        with atomic_file(html) as tmp:
            tmp.write_text(render_html(result), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        Console().print(render_terminal(result))
        if html is not None:
            typer.echo(f"wrote {html}")


# ----------------------------------------------------------------------------------- audit
@COMMANDS(epilog=_examples(
    "dlforge audit runs/credit --data test.csv --sensitive Marital",
    "dlforge audit runs/credit --data test.csv --sensitive Age --bins Age:30,45,60",
    "dlforge audit runs/credit --data valid.csv --sensitive Marital --mitigate equalized_odds",
    "dlforge audit runs/credit --data test.csv --sensitive Marital,Age --bins Age:30,45,60 "
    "--min-ratio 0.9 --json",
    "dlforge audit runs/tweets --privacy                # membership inference",
    "dlforge audit runs/credit --data credit.csv --sensitive Marital --privacy",
))
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (binary output).")],
    data: Annotated[str | None, typer.Option(
        help="A labelled file holding the inputs, the label and the sensitive columns.")] = None,
    sensitive: Annotated[str | None, typer.Option(
        help="Sensitive column(s), a,b (each audited, and their intersection); they need not "
             "be model inputs.")] = None,
    bins: Annotated[list[str] | None, typer.Option(
        help="Cut a numeric sensitive column into bands: COL:EDGE,EDGE,... (e.g. "
             "Age:30,45,60 gives <30, [30,45), [45,60), >=60). Repeatable.")] = None,
    positive: Annotated[str | None, typer.Option(
        help="The favourable class, whose rate is the selection rate (default: the second "
             "class in sorted order).")] = None,
    label: Annotated[str | None, typer.Option(help="Label column (default: as trained).")] = None,
    mitigate: Annotated[str | None, typer.Option(
        help="demographic_parity or equalized_odds: fit Fairlearn's ThresholdOptimizer on "
             "this data, save it with the run (predict and serve then need the sensitive "
             "columns) and audit before and after; none removes it.")] = None,
    min_ratio: Annotated[float, typer.Option(
        help="Verdict: lowest demographic-parity ratio (0.8: the four-fifths rule).")] = 0.8,
    max_difference: Annotated[float | None, typer.Option(
        help="Verdict: highest demographic-parity difference (default: unchecked).")] = None,
    max_eo_difference: Annotated[float | None, typer.Option(
        help="Verdict: highest equalized-odds difference (default: unchecked).")] = None,
    min_group_size: Annotated[int, typer.Option(
        help="Groups smaller than this are flagged and left out of the disparity "
             "measures.")] = 30,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples per group.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    privacy: Annotated[bool, typer.Option(
        "--privacy", help="Membership inference: can a loss-threshold attack tell the "
        "training rows from the held-out ones? (--data: the file the run was trained on; "
        "default its data.path)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Audit a run. Fairness (--sensitive): per-group metrics with bootstrap intervals,
    demographic parity and equalized odds, a verdict (four-fifths rule by default), written to
    RUN_DIR/audit/fairness.json with one chart per metric. Privacy (--privacy): a
    membership-inference attack, written to RUN_DIR/audit/privacy.json. Both update the
    model card."""
    if sensitive is None and not privacy:
        raise ConfigError("nothing to audit: give --sensitive COLUMN (and --data FILE) for the "
                          "fairness audit, or --privacy for the membership-inference attack")
    if sensitive is None:
        _privacy_audit(run_dir, data, as_json)
        return
    if data is None:
        raise ConfigError("--data: the fairness audit needs a labelled file (inputs, label and "
                          "the sensitive columns)")
    result = run_audit(run_dir, data, sensitive, bins=bins, positive=positive, label=label,
                       mitigate=mitigate, resamples=bootstrap, seed=seed,
                       min_group_size=min_group_size,
                       thresholds=Thresholds(min_ratio, max_difference, max_eo_difference))
    if as_json and not privacy:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if as_json:

        both = {"fairness": result, "privacy": privacy_audit(run_dir, data)}
        typer.echo(json.dumps(both, indent=2, default=str))
        return
    console = Console()
    for item in fairness_tables(result):
        console.print(item, soft_wrap=True)
    console.print(f"verdict: [b]{result['verdict']}[/b]")
    console.print(f"wrote {run_dir / 'audit' / 'fairness.json'}, {len(result['plots'])} charts "
                  f"in {run_dir / 'audit' / 'plots'} and {run_dir / 'MODEL_CARD.md'}",
                  soft_wrap=True)
    if privacy:
        _privacy_audit(run_dir, data, False)


def _privacy_audit(run_dir: Path, data: str | None, as_json: bool) -> None:

    report = privacy_audit(run_dir, data)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    dp = report["differential_privacy"]
    typer.echo(f"membership inference (loss threshold) on {report['members']} training and "
               f"{report['non_members']} held-out rows:\n"
               f"  attack AUC        {report['auc']:.3f}   (0.5: no better than chance)\n"
               f"  TPR at 1% FPR     {report['tpr_at_1pct_fpr']:.3f}\n"
               f"  mean loss         {report['member_loss_mean']:.4f} training, "
               f"{report['non_member_loss_mean']:.4f} held-out\n"
               + (f"  trained with DP-SGD: ε = {dp['epsilon']:.3g} at δ = {dp['delta']:g}\n"
                  if dp else "  trained without differential privacy\n")
               + (f"  note: {report['note']}\n" if "note" in report else "")
               + f"saved to {run_dir / 'audit' / 'privacy.json'}")


# ----------------------------------------------------------------------------------- report
@COMMANDS(epilog=_examples("dlforge report runs/credit"))
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Rebuild a run's MODEL_CARD.md and write report.html (the card with its plots embedded):
    model details, intended use, data, metrics, fairness, privacy, compute, limitations."""
    out = write_report(run_dir)
    typer.echo(f"wrote {out} and {run_dir / 'MODEL_CARD.md'}")


def _fmt(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" ±{(ci[1] - ci[0]) / 2:.2f}" if ci else "")


def fairness_tables(result: dict[str, Any]) -> list[Any]:
    """Rich tables (one per attribute and decision rule) and verdict lines to print."""
    out: list[Any] = []
    for name, entry in result["attributes"].items():
        for key in ("model", "mitigated"):
            if key not in entry:
                continue
            r = entry[key]
            what = "the model's decisions" if key == "model" else "after mitigation"
            table = Table(title=f"{name}: {what} (positive = {result['positive']!r}; ± half "
                                "the 95% bootstrap interval)")
            table.add_column("group", no_wrap=True)
            table.add_column("n", justify="right")
            for m in METRICS:
                table.add_column(SHORT[m], justify="right")
            for g, row in r["by_group"].items():
                table.add_row(g + (" (small)" if row["small"] else ""), str(row["count"]),
                              *[_fmt(row[m], row[f"{m}_ci"]) for m in METRICS])
            out.append(table)
            v = r["verdict"]
            out.append(f"{name} ({key}): demographic parity difference "
                       f"{_fmt(r['demographic_parity_difference'])}, ratio "
                       f"{_fmt(r['demographic_parity_ratio'])}; equalized-odds difference "
                       f"{_fmt(r['equalized_odds_difference'])}"
                       + (f" (small groups left out: {', '.join(r['small_groups_excluded'])})"
                          if r["small_groups_excluded"] else "")
                       + f" -> [b]{v['result']}[/b]"
                       + "".join(f"; {c['check']} {_fmt(c['value'])} vs {c['threshold']}"
                                 for c in v["checks"]))
    return out

