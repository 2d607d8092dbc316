"""How much of each batch is padding on the tweets, with dlforge's length bucketing, with
random batches and with padding to max_length: the ceiling on what packing several texts into
one sequence could save.

    .venv/bin/python benchmarks/padding_share.py [--batch-size 64]
"""

from __future__ import annotations

import argparse

import numpy as np

from dlforge.data.datasets import trump_tweets
from dlforge.data.features import TextTokenizer
from dlforge.data.loader import BucketBatchSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    texts = trump_tweets()["text"].tolist()
    tok = TextTokenizer.train(texts, "bpe", 10_000, args.max_length)
    lens = np.array([len(x) for x in tok.encode(texts)])
    print(f"{len(lens)} tweets; tokens per tweet: mean {lens.mean():.1f}, median "
          f"{int(np.median(lens))}, max {lens.max()}; truncated {(lens >= args.max_length).sum()}")
    for name, bucket in (("length-bucketed batches (dlforge)", True), ("random batches", False)):
        real = padded = 0
        for b in BucketBatchSampler(lens, args.batch_size, True, 0, bucket):
            real += lens[b].sum()
            padded += lens[b].max() * len(b)
        print(f"{name:<36} padding share {100 * (1 - real / padded):5.1f}%")
    share = 1 - lens.sum() / (args.max_length * len(lens))
    print(f"{'padded to max_length':<36} padding share {100 * share:5.1f}%")


if __name__ == "__main__":
    main()
