"""Spoken command words for the speech tests, example and benchmark, made on this machine with
Debian's ``espeak-ng`` (never downloaded).

Each clip is one word (yes, no, up, down, left, right, stop, go) said by one *voice*, an
espeak-ng accent and speaker variant such as ``en-gb-scotland+m3``, at one speed (words per
minute) and a pitch drawn per clip; white noise can be mixed in with NumPy. The voices of the
``test`` split never speak in the ``train`` split, and no speaker variant is shared either, so
a score on ``test`` is a score on unseen voices.

Layout written under ``out``::

    train/<word>/<voice>_<speed>.wav   test/<word>/<voice>_<speed>.wav
    speech.csv                         path (relative to out), label, voice, split, speed, pitch

Deterministic: the same arguments give the same files. From the shell::

    python -m dlforge.data.speech_demo data/speech --noise 0.05
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dlforge.errors import DataError

__all__ = ["SPEEDS", "TEST_VOICES", "TRAIN_VOICES", "WORDS", "espeak_missing", "make_speech"]

WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "stop", "go")
_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
_TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "klatt", "Alex", "Annie", "david",
                   "linda", "max")
_TEST_VARIANTS = ("m5", "m6", "f3", "f4", "klatt2", "steph")
# Each speaker variant with two accents (the accent moves through the list).
TRAIN_VOICES: tuple[str, ...] = tuple(
    f"{_ACCENTS[(i + k) % len(_ACCENTS)]}+{v}" for i, v in enumerate(_TRAIN_VARIANTS)
    for k in (0, 3))
TEST_VOICES: tuple[str, ...] = tuple(
    f"{_ACCENTS[(i + k) % len(_ACCENTS)]}+{v}" for i, v in enumerate(_TEST_VARIANTS)
    for k in (1, 4))
SPEEDS: tuple[int, ...] = (130, 160, 190)  # words per minute (espeak-ng -s)
_INSTALL = ("espeak-ng not found: the speech demo speaks its words with it; install it with "
            "apt-get install espeak-ng (Debian, Ubuntu) or brew install espeak-ng (macOS)")


def espeak_missing() -> str | None:
    """The one line saying how to install espeak-ng, or None when it is installed."""
    return None if shutil.which("espeak-ng") else _INSTALL


def _speak(word: str, voice: str, speed: int, pitch: int, path: Path) -> None:
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode or not path.is_file():
        why = (done.stderr or done.stdout).strip().splitlines()
        raise DataError(f"espeak-ng -v {voice}: could not speak {word!r} "
                        f"({why[0] if why else f'exit code {done.returncode}'})")


def _add_noise(path: Path, level: float, rng: np.random.Generator) -> None:
    """Mix white noise of ``level`` times the clip's RMS into a 16-bit mono WAV, in place."""
    with wave.open(str(path), "rb") as f:
        params = f.getparams()
        x = np.frombuffer(f.readframes(params.nframes), dtype="<i2").astype(np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    y = np.clip(np.rint(x + level * rms * rng.standard_normal(len(x))), -32768, 32767)
    with wave.open(str(path), "wb") as f:
        f.setparams(params)
        f.writeframes(y.astype("<i2").tobytes())


def make_speech(out: str | Path, *, words: Sequence[str] = WORDS,
                train_voices: Sequence[str] = TRAIN_VOICES,
                test_voices: Sequence[str] = TEST_VOICES, speeds: Sequence[int] = SPEEDS,
                noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Write the clips (see the module) under ``out`` and return speech.csv's table. ``noise``:
    white noise of this fraction of each clip's RMS (0.1 is 20 dB SNR; 0: none)."""
    missing = espeak_missing()
    if missing:
        raise DataError(missing)
    shared = sorted(set(train_voices) & set(test_voices))
    if shared:
        raise DataError(f"voice {shared[0]!r} is in both train_voices and test_voices; "
                        "evaluation voices must not be heard in training")
    if not words or not train_voices or not test_voices or not speeds:
        raise DataError("words, train_voices, test_voices and speeds must each name at least one")
    root = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for split, voices in (("train", train_voices), ("test", test_voices)):
        for word in words:
            folder = root / split / word
            folder.mkdir(parents=True, exist_ok=True)
            for voice in voices:
                for speed in speeds:
                    pitch = int(rng.integers(30, 71))
                    path = folder / f"{voice.replace('+', '_')}_{speed}.wav"
                    _speak(word, voice, int(speed), pitch, path)
                    if noise:
                        _add_noise(path, noise, rng)
                    rows.append({"path": path.relative_to(root).as_posix(), "label": word,
                                 "voice": voice, "split": split, "speed": int(speed),
                                 "pitch": pitch})
    table = pd.DataFrame(rows)
    table.to_csv(root / "speech.csv", index=False)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlforge.data.speech_demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write (train/, test/, speech.csv)")
    parser.add_argument("--words", default=",".join(WORDS), help="comma-separated words")
    parser.add_argument("--speeds", default=",".join(map(str, SPEEDS)),
                        help="comma-separated speeds (words per minute)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="white noise, as a fraction of each clip's RMS (0.1: 20 dB SNR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        table = make_speech(args.out, words=args.words.split(","),
                            speeds=[int(s) for s in args.speeds.split(",")], noise=args.noise,
                            seed=args.seed)
    except DataError as err:
        print(f"error: {err}")
        return 2
    counts = table.groupby("split").size().to_dict()
    print(f"{len(table)} clips in {args.out}: {counts.get('train', 0)} train "
          f"({table[table.split == 'train'].voice.nunique()} voices), {counts.get('test', 0)} "
          f"test ({table[table.split == 'test'].voice.nunique()} unseen voices)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
