"""Speech: reading and resampling clips, the log-mel front end (held to torchaudio's values),
augmentation, the espeak-ng demo data, AudioClassifier, the CLI, serving, and every bad input
the speech issue lists (each one line naming the file or field, exit 2 from the CLI)."""

from __future__ import annotations

import base64
import os
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlforge.cli import main
from dlforge.data.audio import audio_folder, fix_length, load_audio, read_audio, resample
from dlforge.data.spectrogram import AudioAugmenter, log_mel, mel_filterbank, n_frames
from dlforge.data.speech_demo import TEST_VOICES, TRAIN_VOICES, espeak_missing, make_speech
from dlforge.errors import ConfigError, DataError

sf = pytest.importorskip("soundfile")  # the audio extra

# Tiny settings: 8 kHz, 16 mel bands, a 2-stage CNN of width 4 and 8, 2 epochs.
TINY = {"sample_rate": 8000, "n_mels": 16, "channels": [4, 8], "epochs": 2, "batch_size": 8,
        "verbose": 0}
TINY_FLAGS = ["--sample-rate", "8000", "--n-mels", "16", "--channels", "4,8", "--epochs", "2",
              "--batch-size", "8", "-q"]


def tone(hz: float = 440.0, rate: int = 8000, seconds: float = 0.5, amp: float = 0.5
         ) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def one_error_line(capsys, code: int, *needles: str) -> str:
    """The CLI's answer to a bad input: exit 2 and one line, naming what ``needles`` say."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


# ------------------------------------------------------------------------------ front end
def test_mel_filterbank_matches_torchaudio_slaney():
    """Reference: torchaudio.functional.melscale_fbanks(201, 0, 8000, 40, 16000,
    norm="slaney", mel_scale="slaney") in float64 (torchaudio 2.11.1), which equals
    librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).T (htk=False, norm="slaney")."""
    fb = mel_filterbank(16000, 400, 40)
    assert fb.shape == (201, 40)
    reference = [(2, 0, 0.012404520785440257), (3, 0, 0.005014311415651245),
                 (11, 5, 0.013329954255133428), (12, 5, 0.006464775900095839),
                 (26, 13, 0.011443511247259628), (27, 13, 0.0051473615472847735),
                 (44, 20, 0.007191917266070284), (45, 20, 0.00502047771132937),
                 (75, 27, 0.004104815435199632), (76, 27, 0.003354158185046605),
                 (185, 39, 0.0017249403216904572), (186, 39, 0.0017012154914710842)]
    for i, j, want in reference:
        assert fb[i, j] == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert fb.sum() == pytest.approx(0.9994971491109778, rel=1e-9)
    assert fb[0].max() == 0.0  # the DC bin is below the first band
    with pytest.raises(ConfigError, match="n_mels: 256 mel bands are too many for n_fft 400"):
        mel_filterbank(16000, 400, 256)


def test_log_mel_is_stft_power_through_the_filterbank():
    """Against NumPy: centred frames (zero padding), periodic Hann window, |rfft|^2."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.1, size=(2, 3000))
    n_fft, hop = 256, 100
    fb = mel_filterbank(8000, n_fft, 16)
    got = log_mel(torch.from_numpy(x), n_fft, hop, torch.from_numpy(fb)).numpy()
    assert got.shape == (2, 16, n_frames(3000, hop)) == (2, 16, 31)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)))
    frames = np.stack([padded[:, t * hop:t * hop + n_fft] for t in range(31)], axis=1)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (2, 31, 129)
    want = np.log(power @ fb + 1e-6).transpose(0, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # a 1 kHz tone is loudest in the band around 1 kHz
    band = log_mel(torch.from_numpy(tone(1000.0, 8000, 0.3))[None], n_fft, hop,
                   torch.from_numpy(fb))[0].mean(dim=1).argmax().item()
    edges = np.linspace(0, 1, 18)  # band centres are evenly spaced on the mel scale
    assert fb[:, band].argmax() * 8000 / n_fft == pytest.approx(1000, abs=120)
    assert 0 < band < len(edges)


def test_resample_keeps_pitch_and_level():
    x = tone(440.0, 22050, 1.0)
    y = resample(x, 22050, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert spectrum.argmax() == 440  # 1 Hz bins
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert resample(x, 22050, 22050) is x


def test_fix_length_centres_the_clip():
    x = np.arange(1, 6, dtype=np.float32)
    assert fix_length(x, 9).tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert fix_length(x, 3).tolist() == [2, 3, 4]
    assert fix_length(x, 5) is x


def test_read_audio_files_bytes_arrays_and_pairs(tmp_path):
    stereo = np.stack([tone(440.0, 16000), np.zeros(8000, np.float32)], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 16000, subtype="FLOAT")
    mono = read_audio(tmp_path / "a.wav", 16000)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-7)  # channels averaged
    sf.write(tmp_path / "b.flac", tone(440.0, 8000), 8000)
    flac = read_audio(str(tmp_path / "b.flac"), 16000)
    assert flac.shape == (8000,)  # 0.5 s at 8 kHz, resampled to 16 kHz
    same = read_audio((tmp_path / "b.flac").read_bytes(), 16000)
    np.testing.assert_array_equal(flac, same)
    pcm = (tone() * 32767).astype(np.int16)
    np.testing.assert_allclose(read_audio(pcm, 8000), tone(), atol=1e-4)  # int16 scaled
    assert read_audio((tone(rate=4000), 4000), 8000).shape == (4000,)
    assert load_audio([pcm, (tone(rate=4000), 4000)], 8000, 3000).shape == (2, 3000)


def test_audio_folder_finds_clips_and_ignores_the_rest(tmp_path):
    for path in ("yes/1.wav", "yes/deep/2.WAV", "no/1.flac", "no/.hidden.wav", ".x/1.wav"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / path, tone(), 8000, format="FLAC" if "flac" in path else "WAV")
    (tmp_path / "no" / "notes.txt").write_text("not audio")
    paths, labels = audio_folder(tmp_path)
    assert labels == ["no", "yes", "yes"]
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == [
        "no/1.flac", "yes/1.wav", "yes/deep/2.WAV"]
    lonely = tmp_path / "lonely"
    (lonely / "yes").mkdir(parents=True)
    sf.write(lonely / "yes" / "1.wav", tone(), 8000)
    with pytest.raises(DataError, match=f"{lonely}: only class 'yes' has audio files; expected "
                                        "at least 2 class sub-folders"):
        audio_folder(lonely)
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: audio folder not found"):
        audio_folder(tmp_path / "nope")


def test_augmenter_is_deterministic_and_does_what_it_says():
    x = torch.from_numpy(np.tile(tone(rate=8000, seconds=0.1), (4, 1)))
    aug = AudioAugmenter(shift=20, noise=0.0, seed=3)
    a = aug.waveform(x)
    aug.set_epoch(0)
    assert torch.equal(a, aug.waveform(x))  # same (seed, epoch): same draws
    aug.set_epoch(1)
    assert not torch.equal(a, aug.waveform(x))
    for row in a:  # each row is x shifted by some k in [-20, 20], zeros in the gap
        k = next(k for k in range(-20, 21) if torch.equal(row, _shifted(x[0], k)))
        assert abs(k) <= 20
    noisy = AudioAugmenter(noise=0.5, seed=0).waveform(x)
    assert not torch.equal(noisy, x)
    assert ((noisy - x).square().mean(1).sqrt() <= 0.5 * x.square().mean(1).sqrt() * 1.3).all()
    m = torch.randn(4, 1, 16, 30)
    masked = AudioAugmenter(time_mask=5, freq_mask=3, masks=2, seed=0).spectrogram(m)
    zeroed = masked == 0
    assert zeroed.any() and ((masked == m) | zeroed).all()
    assert zeroed.all(dim=3).sum(dim=2).le(6).all()  # at most 2 x 3 whole mel bands per clip
    assert not AudioAugmenter().active


def _shifted(x: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    if k >= 0:
        out[k:] = x[:len(x) - k]
    else:
        out[:k] = x[-k:]
    return out


# ---------------------------------------------------------------------------- bad input
def test_bad_clips_each_say_what_and_where(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF but not really a wave file at all" * 4)
    with pytest.raises(DataError, match=f"{garbage}: not a readable audio file"):
        read_audio(garbage, 8000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=f"{empty}: not a readable audio file"):
        read_audio(empty, 8000)
    silent = tmp_path / "zero.wav"
    sf.write(silent, np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(DataError, match=f"{silent}: the clip has no samples"):
        read_audio(silent, 8000)
    with pytest.raises(DataError, match="row 1: the clip has no samples"):
        load_audio([np.zeros(0, np.float32)], 8000, 100, source="X")
    fast = tmp_path / "fast.wav"
    sf.write(fast, np.zeros(100, np.float32), 10_000_000)
    with pytest.raises(DataError, match=f"{fast}: sample rate 10000000 Hz cannot be resampled"):
        read_audio(fast, 8000)
    for rate in (0, -8000, 22050.5, float("nan")):
        with pytest.raises(DataError, match="cannot be resampled to 8000 Hz"):
            read_audio((tone(), rate), 8000, "clip")
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.wav'}: audio file not found"):
        read_audio(tmp_path / "nope.wav", 8000)
    with pytest.raises(DataError, match="clip: audio has NaN or infinite samples"):
        read_audio(np.array([0.0, np.nan], np.float32), 8000, "clip")
    with pytest.raises(DataError, match="row 2: expected an audio file path, file bytes or a "
                                        "waveform array, got a missing value"):
        load_audio([tone(), None], 8000, 100, source="X")
    with pytest.raises(DataError, match="empty audio bytes"):
        read_audio(b"", 8000, "upload")


def test_config_refuses_a_window_longer_than_the_clip():
    from dlforge.config import validate_config

    with pytest.raises(ConfigError, match="n_fft: 640 samples is longer than the clip window"):
        validate_config({"inputs": [{"name": "a", "type": "audio", "seconds": 0.01}],
                         "output": {"name": "y"}})
    with pytest.raises(ConfigError, match="sample_rate"):
        validate_config({"inputs": [{"name": "a", "type": "audio", "sample_rate": 0}],
                         "output": {"name": "y"}})


@pytest.mark.parametrize("case", ["garbage", "empty", "zero", "rate", "missing", "labels"])
def test_cli_bad_input_is_one_line_naming_it(tmp_path, capsys, case):
    for i in range(6):
        sf.write(tmp_path / f"good{i}.wav", tone(300.0 + 100 * i), 8000)
    bad = tmp_path / f"{case}.wav"
    if case == "garbage":
        bad.write_bytes(b"\x00\x01 not audio" * 50)
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "zero":
        sf.write(bad, np.zeros((0, 1), np.float32), 8000)
    elif case == "rate":
        sf.write(bad, tone(), 1_000_000_000)
    else:
        sf.write(bad, tone(), 8000)
    rows = [{"path": f"good{i}.wav", "label": "ab"[i % 2]} for i in range(6)]
    rows.insert(3, {"path": "gone.wav" if case == "missing" else bad.name, "label": "b"})
    if case == "labels":
        rows = [{"path": r["path"], "label": ""} for r in rows]
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    code = main(["train", "--data", str(tmp_path / "clips.csv"), "--audio", "path", "--label",
                 "label", "--out", str(tmp_path / "run"), *TINY_FLAGS])
    needle = {"garbage": f"{bad}: not a readable audio file",
              "empty": f"{bad}: not a readable audio file",
              "zero": f"{bad}: the clip has no samples",
              "rate": f"{bad}: sample rate 1000000000 Hz cannot be resampled",
              "missing": f"{tmp_path / 'gone.wav'}: audio file not found",
              "labels": "column 'label' has no labels"}[case]
    one_error_line(capsys, code, needle)
    assert not (tmp_path / "run").exists()


def test_cli_kind_audio_needs_a_folder(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "x.csv"), "--kind", "audio", "--out",
                 str(tmp_path / "run")])
    one_error_line(capsys, code, "--kind audio: --data must be a folder of class sub-folders")


# ------------------------------------------------------------------------- the demo data
@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """3 words x 4 training voices + 2 unseen voices, one speed: 12 + 6 clips."""
    missing = espeak_missing()
    if missing:
        if os.environ.get("DLFORGE_REQUIRE_ESPEAK"):
            pytest.fail(missing)
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("speech")
    make_speech(root, words=("yes", "no", "up"), train_voices=TRAIN_VOICES[:4],
                test_voices=TEST_VOICES[:2], speeds=(160,), noise=0.05)
    return root


def test_demo_data_splits_by_voice_and_is_deterministic(speech, tmp_path):
    table = pd.read_csv(speech / "speech.csv")
    assert len(table) == 18 and set(table.label) == {"yes", "no", "up"}
    train, test = table[table.split == "train"], table[table.split == "test"]
    assert set(train.voice).isdisjoint(test.voice)  # evaluation voices never heard in training
    variants = lambda t: {v.split("+")[1] for v in t.voice}  # noqa: E731
    assert variants(train).isdisjoint(variants(test))  # nor their speakers
    assert set(TRAIN_VOICES).isdisjoint(TEST_VOICES)
    for p in table.path:
        with wave.open(str(speech / p)) as f:
            assert f.getnchannels() == 1 and f.getnframes() > 0.2 * f.getframerate()
    again = make_speech(tmp_path, words=("yes",), train_voices=TRAIN_VOICES[:1],
                        test_voices=TEST_VOICES[:1], speeds=(160,), noise=0.05)
    first = again.path[0]
    assert (tmp_path / first).read_bytes() == (speech / first).read_bytes()
    with pytest.raises(DataError, match="in both train_voices and test_voices"):
        make_speech(tmp_path, train_voices=TRAIN_VOICES[:1], test_voices=TRAIN_VOICES[:1])


# ----------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def fitted(speech, tmp_path_factory):
    from dlforge import AudioClassifier

    clf = AudioClassifier(**TINY, augment={"time_mask": 5, "freq_mask": 3, "shift": 0.05,
                                           "noise": 0.1}).fit(speech / "train")
    run = clf.save(tmp_path_factory.mktemp("runs") / "speech")
    return clf, run


def test_audio_classifier_fits_saves_loads_and_predicts_the_same(fitted, speech):
    import dlforge

    clf, run = fitted
    assert clf.metrics_["task"] == "audio classification"
    assert clf.config_.inputs[0].type == "audio" and clf.config_.model.name == "cnn"
    assert list(clf.classes_) == ["no", "up", "yes"]
    state = (run / "features.json").read_text()
    assert '"mean"' in state and '"samples": 8000' in state
    test = sorted(str(p) for p in (speech / "test").rglob("*.wav"))
    loaded = dlforge.load(run)
    assert type(loaded).__name__ == "AudioClassifier"
    np.testing.assert_allclose(loaded.predict_proba(test), clf.predict_proba(test), atol=1e-6)
    assert list(loaded.predict(speech / "test")) == list(clf.predict(test))  # a folder
    waves = [sf.read(p, dtype="float32")[0] for p in test[:2]]
    pairs = [(w, 22050) for w in waves]  # espeak-ng speaks at 22,050 Hz
    np.testing.assert_allclose(clf.predict_proba(pairs), clf.predict_proba(test[:2]),
                               atol=1e-6)
    raw = [Path(p).read_bytes() for p in test[:2]]
    np.testing.assert_allclose(clf.predict_proba(raw), clf.predict_proba(test[:2]), atol=1e-6)
    assert clf.predict_proba(test).shape == (6, 3)
    assert main(["estimate", str(run)]) == 0  # the cnn on the spectrogram, counted


def test_augmentation_touches_the_training_split_only(fitted, speech):
    from dlforge.data.audio import audio_files

    clf, _ = fitted
    feat = clf.features_["audio"]
    waves = feat.load(audio_files(speech / "test")[:4], "test")
    plain = feat.collate(list(waves))
    assert torch.equal(plain, feat.collate(list(waves)))  # prediction: no randomness
    aug = feat.make_augmenter(seed=0)
    assert aug is not None and not torch.equal(plain, feat.collate(list(waves), aug))
    # the rows it is fitted on come out standardised per mel band: mean 0, std 1
    from dlforge.data.inputs import AudioFeature

    fresh = AudioFeature(clf.config_.inputs[0])
    waves = fresh.load(audio_files(speech / "train"), "train")
    fresh.fit(waves, "train")
    x = fresh.collate(list(waves)).double()
    assert x.mean(dim=(0, 1, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 1, 3), unbiased=False) - 1).abs().max() < 1e-3


def test_crnn_from_paths_and_labels_with_sklearn_contract(speech):
    from sklearn.base import clone

    from dlforge import AudioClassifier

    table = pd.read_csv(speech / "speech.csv")
    train = table[table.split == "train"]
    clf = AudioClassifier("crnn", hidden=8, **TINY)
    assert clone(clf).get_params() == clf.get_params()
    clf.fit([str(speech / p) for p in train.path], train.label)
    assert clf.config_.model.name == "crnn" and clf.config_.model.hidden == 8
    assert clf.predict([str(speech / p) for p in train.path[:3]]).shape == (3,)
    with pytest.raises(DataError, match="y: labels are required"):
        AudioClassifier(**TINY).fit([str(speech / p) for p in train.path])
    with pytest.raises(TypeError, match="valid arguments are"):
        AudioClassifier(n_melz=8)


def test_cli_trains_evaluates_and_predicts_on_folders_and_tables(speech, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(speech / "train"), "--kind", "audio",
                 "--augment-time-mask", "4", "--augment-freq-mask", "2", "--out", str(run),
                 *TINY_FLAGS]) == 0
    assert (run / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(speech / "test")]) == 0
    assert "ours" in capsys.readouterr().out
    assert main(["predict", str(run), "--data", str(speech / "test"), "--out",
                 str(tmp_path / "p.csv")]) == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == 6 and {"audio", "prediction", "proba_yes"} <= set(preds.columns)
    table = pd.read_csv(speech / "speech.csv")  # paths relative to the table's folder
    table[table.split == "train"].to_csv(speech / "train.csv", index=False)
    table[table.split == "test"].to_csv(speech / "test.csv", index=False)
    assert main(["train", "--data", str(speech / "train.csv"), "--audio", "path", "--label",
                 "label", "--model", "crnn", "--hidden", "8", "--out", str(tmp_path / "crnn"),
                 *TINY_FLAGS]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "crnn"), "--data", str(speech / "test.csv")]) == 0


def test_served_over_http_v1_base64_wav(fitted, speech):
    import httpx

    from dlforge.serve.app import ServedModel, ServeSettings
    from tests.serving import Server

    clf, run = fitted
    test = sorted(str(p) for p in (speech / "test").rglob("*.wav"))[:3]
    clips = [base64.b64encode(Path(p).read_bytes()).decode() for p in test]
    served = ServedModel(run, name="speech")
    with Server([served], ServeSettings(max_delay_ms=2)) as srv, httpx.Client(
            base_url=srv.url) as c:
        meta = c.get("/v2/models/speech").json()
        assert meta["inputs"][0]["datatype"] == "BYTES"
        assert meta["inputs"][0]["audio"]["sample_rate"] == 8000
        r = c.post("/v1/models/speech/predict",
                   json={"instances": [{"audio": b} for b in clips]})
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == list(clf.predict(test))
        url = "data:audio/wav;base64," + clips[0]  # what a browser's FileReader gives
        r = c.post("/v1/models/speech/predict", json={"instances": [{"audio": url}]})
        assert r.status_code == 200, r.text
        for bad, needle in (("not base64!", "expected base64-encoded bytes"),
                            (base64.b64encode(b"RIFF junk").decode(),
                             "not a readable audio file"), (17, "got int")):
            r = c.post("/v1/models/speech/predict", json={"instances": [{"audio": bad}]})
            assert r.status_code == 422 and "instances[0].audio" in r.text, r.text
            assert needle in r.text


def test_served_model_decodes_raw_bytes_base64_and_samples(fitted, speech):
    """What both protocols hand to ServedModel.check: raw file bytes (OIP v2 binary BYTES),
    base64 text (JSON, v1 and v2) or a list of samples at the model's rate."""
    from fastapi import HTTPException

    from dlforge.serve.app import ServedModel

    clf, run = fitted
    path = sorted((speech / "test").rglob("*.wav"))[0]
    raw = path.read_bytes()
    served = ServedModel(run, name="speech")
    rows = served.check([{"audio": raw}, {"audio": base64.b64encode(raw).decode()},
                         {"audio": read_audio(path, 8000).tolist()}])
    want = clf.predict_proba([str(path)])[0]
    for p in served.predict(rows):
        assert [p["probabilities"][c] for c in ("no", "up", "yes")] == pytest.approx(want,
                                                                                     abs=1e-5)
    with pytest.raises(HTTPException, match=r"inputs\[0\]\.audio: the clip has no samples"):
        served.check([{"audio": []}], where="inputs")


def test_served_over_http_v2_bytes(fitted, speech):
    """OIP v2: BYTES in JSON (base64 text) and in the binary extension (the raw file bytes)."""
    import json
    import struct

    import httpx

    from dlforge.serve.app import ServedModel, ServeSettings
    from tests.serving import Server

    clf, run = fitted
    test = sorted(str(p) for p in (speech / "test").rglob("*.wav"))[:2]
    clips = [base64.b64encode(Path(p).read_bytes()).decode() for p in test]
    with Server([ServedModel(run, name="speech")], ServeSettings(max_delay_ms=2)) as srv, \
            httpx.Client(base_url=srv.url) as c:
        r = c.post("/v2/models/speech/infer", json={"inputs": [
            {"name": "audio", "shape": [2], "datatype": "BYTES", "data": clips}]})
        assert r.status_code == 200, r.text
        labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
        assert labels == [str(v) for v in clf.predict(test)]
        raw = b"".join(struct.pack("<I", len(b)) + b for b in
                       (Path(p).read_bytes() for p in test))
        header = json.dumps({"inputs": [{"name": "audio", "shape": [2], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(raw)}}]})
        r = c.post("/v2/models/speech/infer", content=header.encode() + raw,
                   headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 200, r.text
        assert next(o for o in r.json()["outputs"] if o["name"] == "label")["data"] == labels
        bad = struct.pack("<I", 9) + b"RIFF junk"
        header = json.dumps({"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(bad)}}]})
        r = c.post("/v2/models/speech/infer", content=header.encode() + bad,
                   headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 422 and "not a readable audio file" in r.text, r.text


def test_onnx_export_serves_the_same_probabilities(fitted, speech):
    """The exported graph takes the standardised log-mel spectrogram (1 x mels x frames)."""
    pytest.importorskip("onnxruntime")
    from dlforge.serve.app import ServedModel

    _, run = fitted
    clips = [{"audio": p.read_bytes()} for p in sorted((speech / "test").rglob("*.wav"))[:3]]
    torch_side, onnx_side = ServedModel(run), ServedModel(run, backend="onnx")
    for a, b in zip(torch_side.predict(torch_side.check(clips)),
                    onnx_side.predict(onnx_side.check(clips)), strict=True):
        assert a["label"] == b["label"]
        assert list(a["probabilities"].values()) == pytest.approx(
            list(b["probabilities"].values()), abs=1e-5)
