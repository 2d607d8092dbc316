import numpy as np
import pytest

from dlforge import TextClassifier
from dlforge.config import validate_config
from dlforge.data.augment import TokenAugmenter
from dlforge.data.loader import FeatureDataset, make_loader
from dlforge.errors import ConfigError

IDS = np.arange(10, 60, dtype=np.int64)  # 50 distinct tokens


def test_each_operation_at_its_rate():
    deleted = TokenAugmenter(delete=0.2, seed=0)
    lengths = [len(deleted(IDS)) for _ in range(400)]
    assert abs(1 - np.mean(lengths) / len(IDS) - 0.2) < 0.02
    masked = TokenAugmenter(mask=0.3, mask_id=4, seed=0)
    outs = np.stack([masked(IDS) for _ in range(400)])
    assert abs((outs == 4).mean() - 0.3) < 0.02
    assert np.all((outs == 4) | (outs == IDS))  # masking keeps positions
    swapped = TokenAugmenter(swap=0.1, seed=0)(IDS)
    assert sorted(swapped.tolist()) == IDS.tolist() and not np.array_equal(swapped, IDS)


def test_never_empty_and_input_untouched():
    aug = TokenAugmenter(delete=0.99, swap=0.5, mask=0.5, seed=1)
    original = IDS.copy()
    assert all(len(aug(IDS)) >= 1 for _ in range(200))
    assert len(aug(np.array([7]))) == 1
    assert np.array_equal(IDS, original)


def test_seeded_per_epoch():
    a, b = TokenAugmenter(delete=0.2, swap=0.1, mask=0.1, seed=3), TokenAugmenter(
        delete=0.2, swap=0.1, mask=0.1, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert all(np.array_equal(a(IDS), b(IDS)) for _ in range(5))
    b.set_epoch(3)
    assert not np.array_equal(a(IDS), b(IDS))


def test_off_by_default_and_rates_validated():
    cfg = validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"}})
    assert cfg.text.augment.model_dump() == {"delete": 0.0, "swap": 0.0, "mask": 0.0}
    assert not TokenAugmenter().active
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.augment\.mask"):
        validate_config({"inputs": [{"name": "t", "augment": {"mask": 1.5}}],
                         "output": {"name": "y"}})
    with pytest.raises(ValueError, match="augment.delete"):
        TokenAugmenter(delete=-0.1)


def test_loader_augments_only_when_asked():
    from dlforge.config import TextInput
    from dlforge.data.inputs import TextFeature

    ids = {"t": [IDS.copy() for _ in range(8)]}
    feats = {"t": TextFeature(TextInput(name="t"))}
    plain = next(iter(make_loader(FeatureDataset(feats, ids), 8, False)))["inputs"]["t"]
    assert plain["input_ids"].shape == (8, 50)
    aug = TokenAugmenter(mask=0.5, mask_id=4, seed=0)
    noisy = next(iter(make_loader(FeatureDataset(feats, ids, augmenters={"t": aug}), 8,
                                  False)))["inputs"]["t"]
    assert (noisy["input_ids"] == 4).any() and not (plain["input_ids"] == 4).any()


def test_training_with_augmentation_is_deterministic_and_off_at_prediction(toy, tiny_params):
    texts, labels = toy
    params = {**tiny_params, "epochs": 6, "augment": {"delete": 0.1, "mask": 0.1}}
    a = TextClassifier(**params).fit(texts, labels)
    b = TextClassifier(**params).fit(texts, labels)
    plain = TextClassifier(**{**params, "augment": None}).fit(texts, labels)
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]
    assert [r["train_loss"] for r in a.history_] != [r["train_loss"] for r in plain.history_]
    assert np.array_equal(a.predict_proba(texts), a.predict_proba(texts))  # no noise
    assert a.metrics_["validation"]["accuracy"] >= 0.85
