"""The model card: MODEL_CARD.md in every run, report.html from dlforge report."""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest

from dlforge import load
from dlforge.audit.card import card_sections, render_markdown
from dlforge.cli import main
from dlforge.run import update_run

SECTIONS = ["Model details", "Intended use", "Data", "Metrics", "Fairness", "Privacy", "Compute",
            "Limitations"]


@pytest.fixture
def run(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    return out


def test_every_run_has_a_card_outside_the_manifest(run):
    card = (run / "MODEL_CARD.md").read_text()
    # written at save time inside the temporary folder, named after the run all the same
    assert card.startswith("# Model card: run\n") and "Run: `run`," in card
    for title in SECTIONS:
        assert f"\n## {title}\n" in card
    assert "Mitchell et al. 2019" in card
    assert "| model |" in card and "| majority class |" in card  # metrics with the baseline
    assert "Trained without differential privacy" in card
    assert "Not audited" in card and "PII scrubbing was off" in card
    files = json.loads((run / "dlforge.json").read_text())["files"]
    assert "MODEL_CARD.md" not in files
    (run / "MODEL_CARD.md").write_text("edited by hand\n")
    load(run)  # a document, not part of the model: editing it does not "alter" the run


def test_compute_is_measured(run):
    compute = json.loads((run / "metrics.json").read_text())["compute"]
    assert compute["train_seconds"] > 0 and compute["epochs"] == 3
    assert compute["parameters"] == sum(p.numel() for p in load(run).model_.parameters())
    assert compute["forward_flops_per_example"] > 0
    card = (run / "MODEL_CARD.md").read_text()
    assert f"| parameters | {compute['parameters']:,} |" in card
    assert f"| forward FLOPs per example | {compute['forward_flops_per_example']:,} |" in card


def test_privacy_record_is_read(run):
    (run / "privacy.json").write_text(json.dumps({"epsilon": 7.93, "delta": 1e-5,
                                                  "accountant": "prv", "max_grad_norm": 1.0}))
    card = render_markdown(run)
    assert "ε = 7.93 at δ = 1e-05, accountant prv" in card
    assert "clipping at 1.0" in card and "without differential privacy" not in card


def test_report_html_embeds_plots(run, capsys):
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 2  # training curves and the confusion matrix
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page
    load(run)  # the run is still intact


def test_report_bad_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such run directory" in err


def test_update_run_adds_files_to_the_manifest(run):
    before = (run / "model.safetensors").stat().st_ino
    update_run(run, lambda tmp: (tmp / "extra.json").write_text("{}"))
    files = json.loads((run / "dlforge.json").read_text())["files"]
    assert "extra.json" in files and "MODEL_CARD.md" not in files
    assert (run / "model.safetensors").stat().st_ino == before  # hard-linked, not copied
    assert not list(run.parent.glob(".run.*"))
    load(run)


def test_sections_survive_missing_records(tmp_path):
    (tmp_path / "bare").mkdir()
    titles = [t for t, _ in card_sections(tmp_path / "bare")]
    assert titles[:len(SECTIONS)] == SECTIONS
