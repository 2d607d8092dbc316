"""Speech: eight spoken command words made on this machine with espeak-ng (24 voices to train
on, 12 unseen voices to test on, a little noise mixed in), a CNN on log-mel spectrograms from
the CLI, then a CRNN from Python, each scored on the voices it never heard. See
benchmarks/speech.py for the comparison with a logistic regression.

    apt-get install espeak-ng        # once
    .venv/bin/python examples/speech.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from dlforge import AudioClassifier
from dlforge.data.speech_demo import make_speech

ROOT = Path("runs/speech-data")


def main() -> None:
    if not (ROOT / "speech.csv").is_file():
        make_speech(ROOT, noise=0.05)  # train/<word>/*.wav, test/<word>/*.wav, speech.csv
    dlforge = str(Path(sys.executable).with_name("dlforge"))
    subprocess.run([dlforge, "train", "--data", str(ROOT / "train"), "--kind", "audio",
                    "--augment-time-mask", "5", "--augment-freq-mask", "5",
                    "--out", "runs/speech", "--overwrite", "--quiet"], check=True)
    subprocess.run([dlforge, "evaluate", "runs/speech", "--data", str(ROOT / "test")],
                   check=True)

    # The same data from Python, with the CRNN, on the paths of the table.
    table = pd.read_csv(ROOT / "speech.csv")
    train, test = table[table.split == "train"], table[table.split == "test"]
    clf = AudioClassifier("crnn", augment={"shift": 0.1, "noise": 0.1}, verbose=0)
    clf.fit([str(ROOT / p) for p in train.path], train.label)
    acc = clf.score([str(ROOT / p) for p in test.path], test.label)
    print(f"Python, CRNN: accuracy on unseen voices {acc:.4f}")
    clf.save("runs/speech-crnn")


if __name__ == "__main__":
    main()
