"""Speech commands on unseen voices: dlforge's AudioClassifier (defaults: the image CNN on the
log-mel spectrogram; and the CRNN) against a logistic regression on each mel band's mean and
standard deviation over time, on the same split: the clips of ``dlforge.data.speech_demo``
(8 words, espeak-ng), trained on 24 voices and scored on 12 voices never heard in training
(nor their speaker variants). The issue's target: accuracy on unseen voices clearly above the
logistic regression. Also reported: training samples per second.

    .venv/bin/python benchmarks/speech.py [--data DIR] [--noise 0.05] [--models cnn,crnn]
        [--epochs N] [--channels 16,32,64] [--hidden 32] [--augment]

Without ``--data`` the clips are generated into a temporary folder (espeak-ng must be
installed: apt-get install espeak-ng); with it, they are generated there once and reused.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dlforge import AudioClassifier
from dlforge.config import validate_config
from dlforge.data.inputs import AudioFeature
from dlforge.data.speech_demo import make_speech

AUGMENT = {"shift": 0.1, "noise": 0.1, "time_mask": 5, "freq_mask": 5}


def band_statistics(paths: list[str]) -> np.ndarray:
    """Each clip's log-mel mean and std per band (80 numbers), with dlforge's own front end
    (16 kHz, 1 s window, 40 bands): the logistic regression sees what the network sees."""
    cfg = validate_config({"inputs": [{"name": "a", "type": "audio"}], "output": {"name": "y"}})
    feat = AudioFeature(cfg.inputs[0])
    waves = torch.from_numpy(feat.load(paths, "clips"))
    with torch.no_grad():
        m = feat._log_mel(waves).double()  # (N, mels, frames)
    return torch.cat([m.mean(dim=2), m.std(dim=2)], dim=1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="folder for the clips (generated once)")
    ap.add_argument("--noise", type=float, default=0.05,
                    help="white noise mixed into every clip, as a fraction of its RMS")
    ap.add_argument("--models", default="cnn,crnn", help="dlforge families to train")
    ap.add_argument("--epochs", type=int, help="unset: dlforge's recipe chooses")
    ap.add_argument("--channels", help="conv stage widths, e.g. 16,32,64 (unset: the family's "
                                       "default)")
    ap.add_argument("--hidden", type=int, help="the CRNN's GRU width (unset: its default)")
    ap.add_argument("--augment", action="store_true",
                    help=f"also train each family with augmentation {AUGMENT}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    if not (root / "speech.csv").is_file():
        t0 = time.perf_counter()
        make_speech(root, noise=args.noise, seed=args.seed)
        print(f"generated the clips in {time.perf_counter() - t0:.0f} s")
    table = pd.read_csv(root / "speech.csv")
    train, test = table[table.split == "train"], table[table.split == "test"]
    test_paths = [str(root / p) for p in test.path]
    y_test = test.label.to_numpy()
    print(f"speech: {len(train)} training clips ({train.voice.nunique()} voices), {len(test)} "
          f"test clips ({test.voice.nunique()} unseen voices), {table.label.nunique()} words; "
          f"torch threads {torch.get_num_threads()}")

    rows = []
    majority = train.label.value_counts().idxmax()
    rows.append(("majority class", float((y_test == majority).mean()), None, None))
    t0 = time.perf_counter()
    lr = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                      {"logisticregression__C": np.logspace(-3, 2, 6)}, cv=3)
    lr.fit(band_statistics([str(root / p) for p in train.path]), train.label)
    lr_acc = float((lr.predict(band_statistics(test_paths)) == y_test).mean())
    rows.append(("logistic regression, band mean+std", lr_acc, time.perf_counter() - t0, None))

    runs = [(m, None) for m in args.models.split(",")]
    if args.augment:
        runs += [(m, AUGMENT) for m in args.models.split(",")]
    for model, augment in runs:
        t0 = time.perf_counter()
        channels = [int(c) for c in args.channels.split(",")] if args.channels else None
        clf = AudioClassifier(model, epochs=args.epochs, augment=augment, seed=args.seed,
                              channels=channels, hidden=args.hidden if model == "crnn" else None,
                              verbose=0).fit(root / "train")
        seconds = time.perf_counter() - t0
        acc = float((clf.predict(test_paths) == y_test).mean())
        name = f"AudioClassifier({model!r}{', augment' if augment else ''})"
        rows.append((f"{name}, {clf.metrics_['epochs_run']} epochs", acc, seconds,
                     clf.metrics_["compute"]["samples_per_s"]))

    print(f"\n{'model':<52}{'unseen-voice acc':>17}{'fit s':>8}{'train samples/s':>17}")
    for name, acc, seconds, speed in rows:
        print(f"{name:<52}{acc:>17.4f}{'' if seconds is None else f'{seconds:.0f}':>8}"
              f"{'' if speed is None else f'{speed:.1f}':>17}")
    best = max(acc for name, acc, _, _ in rows if name.startswith("AudioClassifier"))
    print(f"\nbest dlforge / logistic regression accuracy: {best / lr_acc:.3f} "
          f"({best:.4f} vs {lr_acc:.4f}); target clearly above: "
          f"{'PASS' if best >= lr_acc + 0.05 else 'FAIL'}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
