"""Adding a model family touches three files and its new hyperparameter one more — the files
docs/architecture.md's "where do I add" table names — and the family then trains through the
estimator and the CLI flag and passes check_model.

The test does it for real: it copies the package, writes a tiny family into the copy by editing
only those files, checks that nothing else differs from the original, and runs the new family
in a fresh interpreter that imports the copy.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dlforge

SRC = Path(dlforge.__file__).parent

FAMILY = '''\
"""A bag of embeddings: the tiniest text family (for tests/test_add_family.py)."""

import torch
from torch import nn


class BagEncoder(nn.Module):
    def __init__(self, cfg, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.bag_width, padding_idx=0)
        self.out_dim = cfg.bag_width

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(torch.float32)
        return (self.embed(ids) * m).sum(1) / m.sum(1).clamp(min=1)
'''
CONFIG = '''

class BagConfig(_Strict):
    """A bag of embeddings (tests/test_add_family.py)."""

    KINDS: ClassVar[tuple[str, ...]] = ("text",)
    TINY: ClassVar[dict[str, Any]] = {"bag_width": 8}
    name: Literal["bag"] = "bag"
    bag_width: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    head_hidden: list[int] = Field(default_factory=list)


'''


def _edit(path: Path, anchor: str, new: str, after: bool = True) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(anchor) == 1, f"{path.name}: anchor {anchor!r} not found once"
    path.write_text(text.replace(anchor, anchor + new if after else new + anchor),
                    encoding="utf-8")


def _changed(a: Path, b: Path) -> list[str]:
    out = []
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])

    def walk(c: filecmp.dircmp, prefix: str) -> None:
        out.extend(prefix + n for n in c.left_only + c.right_only + c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp, "")
    return sorted(out)


def test_a_new_family_and_its_hyperparameter_touch_four_files(tmp_path):
    copy = tmp_path / "src" / "dlforge"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # 1. the family's module
    (copy / "models" / "bag.py").write_text(FAMILY, encoding="utf-8")
    # 2. its config class, and its place among the families model selection may choose
    models = copy / "config" / "models.py"
    _edit(models, "# The families model selection chooses from", CONFIG.lstrip("\n"),
          after=False)
    _edit(models, "CANDIDATES: tuple[type[_Strict], ...] = (", "BagConfig, ")
    # 3. its builder for each input kind it encodes
    registry = copy / "models" / "registry.py"
    _edit(registry, "from dlforge.models.cnn import ImageCNN, SequenceCNN\n",
          "from dlforge.models.bag import BagEncoder\n", after=False)
    _edit(registry, "MODELS: dict[tuple[str, str], Callable[..., nn.Module]] = {\n",
          '    ("bag", "text"): lambda c, s: BagEncoder(c, s["vocab_size"]),\n')
    # 4. the new hyperparameter: one row of the parameter table
    _edit(copy / "config" / "params.py", "    # ------------------------------------------------"
          "------------------------------ train\n",
          '    _p("bag_width", "model.bag_width", "int", "Bag of embeddings: width.", {"text"},'
          " flag=True),\n", after=False)

    assert _changed(SRC, copy) == ["config/models.py", "config/params.py", "models/bag.py",
                                   "models/registry.py"]

    script = textwrap.dedent(f"""
        import pandas as pd
        from dlforge import TextClassifier, load
        from dlforge.cli import main
        from dlforge.config import MODEL_FAMILIES
        from dlforge.testing import check_model, toy_texts

        assert "bag" in MODEL_FAMILIES
        texts, labels = toy_texts(80)
        clf = TextClassifier(model="bag", bag_width=12, epochs=2, lr=1e-2, precision="fp32",
                             verbose=0).fit(texts, labels)
        assert clf.config_.model.bag_width == 12 and clf.get_params()["bag_width"] == 12
        assert len(clf.predict(texts[:5])) == 5

        csv = {str(tmp_path / "toy.csv")!r}
        pd.DataFrame({{"t": texts, "y": labels}}).to_csv(csv, index=False)
        out = {str(tmp_path / "run")!r}
        code = main(["train", "--data", csv, "--text", "t", "--label", "y", "--model", "bag",
                     "--bag-width", "10", "--epochs", "1", "--precision", "fp32", "--out", out,
                     "--quiet"])
        assert code == 0, code
        assert load(out).config_.model.bag_width == 10

        from dlforge.testing import CASES, TINY_MODELS

        assert ("bag", "text") in CASES and TINY_MODELS["bag"]["bag_width"] == 8
        check_model("bag", "text")  # as tests/test_common.py runs it for every family
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(copy.parent)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
