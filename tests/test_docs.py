"""The configs in docs/kinds.md validate as written (so the docs cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dlforge.config import validate_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "kinds.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_every_kind_has_a_config():
    assert len(BLOCKS) == 9


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_config_validates(block):
    cfg = validate_config(yaml.safe_load(block), source="docs/kinds.md")
    assert cfg.model.name in ("transformer", "cnn", "rnn", "mlp", "pretrained", "auto",
                              "ensemble")


def test_parameters_page_is_the_parameter_table():
    from dlforge.config.docs import markdown

    page = Path(__file__).resolve().parent.parent / "docs" / "parameters.md"
    assert page.read_text(encoding="utf-8") == markdown(), (
        "docs/parameters.md is stale: run make docs")
