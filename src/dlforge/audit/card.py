"""The model card: ``MODEL_CARD.md`` in every run, ``report.html`` from ``dlforge report``.

Sections after Mitchell et al. 2019, "Model Cards for Model Reporting": model details,
intended use, data, metrics (with baselines), fairness, privacy, compute, limitations. Built
only from the run's own records (config.yaml, dlforge.json, metrics.json, data.json,
labels.json, history.csv, privacy.json, audit/fairness.json, postprocess.json), so writing it
at save time is cheap and rebuilding it later gives the same card plus any audit since.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import yaml

from dlforge._atomic import atomic_file
from dlforge.run import check_run, run_name

__all__ = ["CARD", "REPORT", "card_sections", "render_html", "render_markdown", "write_card",
           "write_report"]

CARD = "MODEL_CARD.md"
REPORT = "report.html"
Block = tuple  # ("p", text) | ("list", [text]) | ("table", header, rows) | ("img", rel, caption)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _records(run: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    history = []
    if (run / "history.csv").is_file():
        with (run / "history.csv").open(encoding="utf-8") as fh:
            history = list(csv.DictReader(fh))
    return {"config": config, "manifest": _read_json(run / "dlforge.json"),
            "metrics": _read_json(run / "metrics.json"), "data": _read_json(run / "data.json"),
            "labels": _read_json(run / "labels.json"), "history": history,
            "privacy": _read_json(run / "privacy.json") if (run / "privacy.json").is_file()
            else None,
            "fairness": _read_json(run / "audit" / "fairness.json")
            if (run / "audit" / "fairness.json").is_file() else None,
            "membership": _read_json(run / "audit" / "privacy.json")
            if (run / "audit" / "privacy.json").is_file() else None,
            "postprocess": _read_json(run / "postprocess.json")
            if (run / "postprocess.json").is_file() else None}


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _parameters(run: Path, metrics: dict[str, Any]) -> int | None:
    compute = metrics.get("compute") or {}
    if compute.get("parameters") is not None:
        return int(compute["parameters"])
    try:
        from safetensors import safe_open

        n = 0
        with safe_open(run / "model.safetensors", framework="pt") as fh:
            for k in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                size = 1
                for s in fh.get_slice(k).get_shape():
                    size *= s
                n += size
        return n
    except (OSError, ValueError, ImportError):
        return None


# ---------------------------------------------------------------------------------- sections
def card_sections(run: str | Path) -> list[tuple[str, list[Block]]]:
    """The card as (section title, blocks), for either renderer."""
    run = Path(run)
    r = _records(run)
    cfg, mf, metrics, data, labels = (r["config"], r["manifest"], r["metrics"], r["data"],
                                      r["labels"])
    inputs = [i for i in cfg.get("inputs") or [] if isinstance(i, dict)]
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {
        "name": cfg.get("model", "-")}
    output = (cfg.get("output") or {}).get("name") if isinstance(cfg.get("output"), dict) \
        else None
    forecast = cfg.get("forecast") if isinstance(cfg.get("forecast"), dict) else None
    task = (mf.get("task") or metrics.get("task") or "").replace("_", " ")
    n_params = _parameters(run, metrics)
    sections: list[tuple[str, list[Block]]] = []

    # Model details
    hyper = ", ".join(f"{k} {v}" for k, v in model.items()
                      if k != "name" and v not in (None, [])) or "defaults"
    what_in = (", ".join(f"{i.get('name')} ({i.get('type')})" for i in inputs) if inputs else
               ", ".join((forecast or {}).get("targets", [])))
    classes = labels.get("classes")
    details = [
        f"Run: `{_name(run)}`, created {mf.get('created', '-')} with dlforge "
        f"{mf.get('dlforge_version', '-')} ({mf.get('estimator', '-')}).",
        f"Task: {task or '-'}. Model family: {model.get('name', '-')} ({hyper}); "
        f"{n_params:,} parameters." if n_params is not None else
        f"Task: {task or '-'}. Model family: {model.get('name', '-')} ({hyper}).",
        f"Inputs: {what_in or '-'}. Output: "
        + (f"`{output}`, {labels.get('kind')} classes {classes}" if classes else
           f"`{output}` (a number)" if output else
           f"the next {(forecast or {}).get('horizon', '?')} steps"),
        "Training: AdamW, " + ", ".join(f"{k} {(cfg.get('train') or {}).get(k)}" for k in (
            "epochs", "batch_size", "lr", "seed")) + f"; best epoch {metrics.get('best_epoch')}"
        f" of {metrics.get('epochs_run')} (monitor: validation {metrics.get('monitor')}).",
    ]
    sections.append(("Model details", [("list", details)]))

    # Intended use
    use = [f"Primary use: {task or 'prediction'} on data like the training data "
           f"(`{data.get('source', 'not recorded')}`): the same columns, the same kind of "
           "values, the same population.",
           "Out of scope: data from another population, period or source without "
           "re-evaluation (`dlforge evaluate`); decisions about people without a fairness "
           "audit (`dlforge audit`) and human review."]
    if r["postprocess"]:
        pp = r["postprocess"]
        use.append(f"Predictions are post-processed for fairness ({pp.get('constraint')} over "
                   f"{', '.join(pp.get('columns', []))}): every prediction request must give "
                   "those sensitive values.")
    sections.append(("Intended use", [("list", use)]))

    # Data
    sections.append(("Data", _data_blocks(data, cfg)))

    # Metrics
    sections.append(("Metrics", _metric_blocks(metrics, run)))

    # Fairness
    sections.append(("Fairness", _fairness_blocks(r["fairness"], r["postprocess"])))

    # Privacy
    p = r["privacy"]
    if p:
        priv = [("p", f"Trained with differential privacy (DP-SGD): ε = {_f(p.get('epsilon'), 2)}"
                      f" at δ = {p.get('delta')}, accountant {p.get('accountant', '-')}, "
                      f"per-example gradient clipping at {p.get('max_grad_norm', '-')}.")]
    else:
        priv = [("p", "Trained without differential privacy: the weights may memorise "
                      "individual training rows.")]
    m = r.get("membership")
    if m:
        priv.append(("p", f"Membership inference (a loss-threshold attack, `dlforge audit "
                          f"--privacy`) on {m.get('members')} training and "
                          f"{m.get('non_members')} held-out rows: attack AUC "
                          f"{_f(m.get('auc'), 3)} (0.5 is chance), TPR at 1% FPR "
                          f"{_f(m.get('tpr_at_1pct_fpr'), 3)}."))
    else:
        priv.append(("p", "Membership inference not audited (`dlforge audit RUN_DIR "
                          "--privacy`)."))
    clean = data.get("cleaning") or {}
    if (cfg.get("data") or {}).get("clean", {}).get("pii"):
        priv.append(("p", f"PII scrubbing was on: {_pii_line(clean)}."))
    else:
        priv.append(("p", "PII scrubbing was off (`clean: {pii: true}` replaces e-mails, "
                          "phone numbers, card numbers, IP addresses and URLs in text inputs)."))
    sections.append(("Privacy", priv))

    # Compute
    sections.append(("Compute", _compute_blocks(metrics, r["history"], n_params)))

    # Limitations
    sections.append(("Limitations", [("list", _limitations(r, metrics, data))]))

    # Plots
    plots = [("img", rel, cap) for rel, cap in (
        ("plots/curves.png", "Training curves"),
        ("plots/confusion_matrix.png", "Confusion matrix"))
        if (run / rel).is_file()]
    plots += [("img", rel, Path(rel).stem.replace("_", " "))
              for rel in ((r["fairness"] or {}).get("plots") or []) if (run / rel).is_file()]
    if plots:
        sections.append(("Plots", plots))
    return sections


def _pii_line(clean: dict[str, Any]) -> str:
    kinds = {k.removeprefix("pii_"): v for k, v in clean.items()
             if k.startswith("pii_") and k != "pii_rows"}
    if not kinds:
        return "no counts recorded"
    return (f"{clean.get('pii_rows', 0)} text values changed; replaced "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in kinds.items())
            + " (the original values are not kept anywhere in the run)")


def _data_blocks(data: dict[str, Any], cfg: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    splits = data.get("splits") or {}
    blocks.append(("p", f"Source: `{data.get('source', 'not recorded')}`. Splits (seeded "
                        f"{(cfg.get('data') or {}).get('seed', '-')}): " + ", ".join(
                            f"{k} {v}" for k, v in splits.items()) + "."))
    clean = data.get("cleaning") or {}
    if clean:
        rows = [[k.replace("_", " "), str(v)] for k, v in clean.items()
                if not k.startswith("pii_")]
        blocks.append(("table", ["cleaning step", "rows"], rows))
        if any(k.startswith("pii_") for k in clean):
            blocks.append(("p", f"PII scrubbed: {_pii_line(clean)}."))
    counts = data.get("class_counts_train")
    if counts:
        blocks.append(("table", ["class", "training rows"],
                       [[str(k), str(v)] for k, v in counts.items()]))
    if data.get("target_train"):
        t = data["target_train"]
        blocks.append(("p", "Training target: " + ", ".join(f"{k} {_f(v)}"
                                                             for k, v in t.items()) + "."))
    return blocks


def _metric_blocks(metrics: dict[str, Any], run: Path) -> list[Block]:
    blocks: list[Block] = []
    for split in ("validation", "test"):
        m = metrics.get(split)
        if not m:
            continue
        base = m.get("baseline") or {}
        if "smape" in m:
            keys = ["mae", "rmse", "smape"]
        elif "rmse" in m:
            keys = ["mae", "rmse", "r2"]
        else:
            keys = ["accuracy", "macro_f1", "roc_auc"]
        rows = [["model", *[_f(m.get(k)) for k in keys]],
                [str(base.get("strategy", "baseline")), *[_f(base.get(k)) for k in keys]]]
        if m.get("seasonal_naive"):
            sn = m["seasonal_naive"]
            rows.append([str(sn.get("strategy")), *[_f(sn.get(k)) for k in keys]])
        blocks.append(("p", f"{split.capitalize()} split:"))
        blocks.append(("table", ["", *keys], rows))
    cv = metrics.get("cross_validation")
    if cv:
        blocks.append(("p", f"{cv['k']}-fold cross-validation: " + ", ".join(
            f"{k} {cv['mean'][k]:.4f} ± {cv['std'][k]:.4f}" for k in cv.get("mean", {}))))
    if not blocks:
        blocks.append(("p", "No held-out metrics were recorded (no validation or test split)."))
    return blocks


def _fairness_blocks(fair: dict[str, Any] | None, pp: dict[str, Any] | None) -> list[Block]:
    if not fair:
        return [("p", "Not audited. Run `dlforge audit RUN_DIR --data FILE --sensitive COLUMN` "
                      "to measure per-group accuracy, selection rate, TPR and FPR, demographic "
                      "parity and equalized odds.")]
    blocks: list[Block] = [("p", f"Audited on `{fair.get('data')}` ({fair.get('rows')} rows, "
                                 f"{fair.get('created', '')}); positive decision = "
                                 f"{fair.get('positive')!r}.")]
    rows = []
    for name, entry in (fair.get("attributes") or {}).items():
        for key in ("model", "mitigated"):
            if key not in entry:
                continue
            e = entry[key]
            small = e.get("small_groups_excluded") or [
                g for g, v in e.get("by_group", {}).items() if v.get("small")]
            rows.append([name, key, str(len(e.get("by_group", {}))),
                         _f(e.get("demographic_parity_difference"), 3),
                         _f(e.get("demographic_parity_ratio"), 3),
                         _f(e.get("equalized_odds_difference"), 3),
                         (e.get("verdict") or {}).get("result", "-"),
                         ", ".join(small) or "-"])
    blocks.append(("table", ["attribute", "decisions", "groups", "DP difference", "DP ratio",
                             "EO difference", "verdict", "small groups (left out)"], rows))
    blocks.append(("p", f"Groups under {fair.get('min_group_size')} rows are reported with "
                        "their bootstrap intervals but left out of the disparity measures."))
    t = fair.get("thresholds") or {}
    blocks.append(("p", f"Verdict thresholds: demographic-parity ratio >= {t.get('min_ratio')} "
                        "(four-fifths rule at 0.8)"
                        + (f", DP difference <= {t['max_difference']}"
                           if t.get("max_difference") is not None else "")
                        + (f", EO difference <= {t['max_eo_difference']}"
                           if t.get("max_eo_difference") is not None else "") + "."))
    if pp:
        blocks.append(("p", f"Mitigation: Fairlearn ThresholdOptimizer ({pp.get('constraint')}) "
                            f"fitted on `{(pp.get('fitted_on') or {}).get('data')}`; its "
                            "per-group thresholds are applied by predict and serve."))
    return blocks


def _compute_blocks(metrics: dict[str, Any], history: list[dict[str, Any]],
                    n_params: int | None) -> list[Block]:
    c = metrics.get("compute") or {}
    seconds = c.get("train_seconds")
    if seconds is None and history:
        seconds = sum(float(h.get("seconds") or 0) for h in history)
    rows = [["training time (epochs, measured)", f"{seconds:.1f} s" if seconds is not None
             else "-"],
            ["epochs", _f(c.get("epochs", len(history) or None))],
            ["throughput", f"{c['samples_per_s']:,} examples/s" if c.get("samples_per_s")
             else "-"],
            ["parameters", f"{n_params:,}" if n_params is not None else "-"],
            ["forward FLOPs per example", f"{c['forward_flops_per_example']:,}"
             if c.get("forward_flops_per_example") is not None else "not measured"],
            ["device, precision", f"{c.get('device', '-')}, {c.get('precision', '-')}"]]
    blocks: list[Block] = [("table", ["", ""], rows)]
    if c.get("flops_note"):
        blocks.append(("p", f"FLOPs: {c['flops_note']}."))
    return blocks


def _limitations(r: dict[str, Any], metrics: dict[str, Any], data: dict[str, Any]) -> list[str]:
    out = []
    splits = data.get("splits") or {}
    held = splits.get("test") or splits.get("validation") or 0
    held = held if isinstance(held, int) else 0  # forecasting records split ranges
    if not splits.get("test"):
        out.append("The metrics are on the validation split, which also chose the best epoch; "
                   "score an untouched test file with `dlforge evaluate` for an unbiased "
                   "estimate.")
    if 0 < held < 200:
        out.append(f"Only {held} held-out rows: the metrics' uncertainty is large.")
    m = metrics.get("test") or metrics.get("validation") or {}
    base = (m.get("baseline") or {}).get("accuracy")
    if m.get("accuracy") is not None and base is not None and m["accuracy"] - base < 0.02:
        out.append("The model barely beats the majority-class baseline.")
    if r["fairness"] is None:
        out.append("Not audited for fairness.")
    else:
        for name, entry in (r["fairness"].get("attributes") or {}).items():
            last = entry.get("mitigated") or entry.get("model") or {}
            if (last.get("verdict") or {}).get("passed") is False:
                out.append(f"Fails the fairness thresholds for {name}.")
    if r["privacy"] is None:
        out.append("No differential privacy: membership of a training row may be inferable.")
    out.append("Performance outside the training data's distribution is unknown.")
    return out


# ---------------------------------------------------------------------------------- renderers
def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _name(run: Path) -> str:
    return run_name(run)  # the card is written inside the run's temporary folder


def render_markdown(run: str | Path, sections: list[tuple[str, list[Block]]] | None = None
                    ) -> str:
    run = Path(run)
    sections = card_sections(run) if sections is None else sections
    lines = [f"# Model card: {_name(run)}", "",
             "Sections after Mitchell et al. 2019, *Model Cards for Model Reporting*. Written by "
             "dlforge from the run's records; `dlforge report` rebuilds it and writes "
             "report.html.", ""]
    for title, blocks in sections:
        lines += [f"## {title}", ""]
        for b in blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "list":
                lines += [f"- {item}" for item in b[1]] + [""]
            elif b[0] == "table":
                lines.append("| " + " | ".join(_md_cell(h) for h in b[1]) + " |")
                lines.append("|" + "---|" * len(b[1]))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
                lines.append("")
            elif b[0] == "img":
                lines += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    """Markdown's `code` spans as <code>, everything else escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(run: str | Path, sections: list[tuple[str, list[Block]]] | None = None) -> str:
    """One self-contained page: the card with every plot embedded as a base64 PNG."""
    run = Path(run)
    sections = card_sections(run) if sections is None else sections
    body = []
    for title, blocks in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        for b in blocks:
            if b[0] == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "list":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row)
                               + "</tr>" for row in b[2])
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            elif b[0] == "img":
                data = base64.b64encode((run / b[1]).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b[2])}" '
                            f'src="data:image/png;base64,{data}"><figcaption>'
                            f"{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
             "padding:0 1rem;color:#222}table{border-collapse:collapse;margin:.5rem 0}"
             "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}"
             "th{background:#f3f3f3}figure{display:inline-block;margin:.5rem}"
             "img{max-width:28rem}code{background:#f3f3f3;padding:0 .2rem}")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Model card: {html.escape(_name(run))}</title><style>{style}</style></head>"
            f"<body><h1>Model card: {html.escape(_name(run))}</h1>"
            "<p>Sections after Mitchell et al. 2019, <i>Model Cards for Model Reporting</i>.</p>"
            + "\n".join(body) + "</body></html>\n")


# ---------------------------------------------------------------------------------- writers
def write_card(run: str | Path) -> Path:
    """(Re)write ``RUN_DIR/MODEL_CARD.md`` atomically; return its path."""
    run = Path(run)
    with atomic_file(run / CARD) as tmp:
        tmp.write_text(render_markdown(run), encoding="utf-8")
    return run / CARD


def write_report(run: str | Path) -> Path:
    """Check the run, rebuild its card and write ``RUN_DIR/report.html``; return its path."""
    run = Path(run)
    check_run(run)
    sections = card_sections(run)
    with atomic_file(run / CARD) as tmp:
        tmp.write_text(render_markdown(run, sections), encoding="utf-8")
    with atomic_file(run / REPORT) as tmp:
        tmp.write_text(render_html(run, sections), encoding="utf-8")
    return run / REPORT
