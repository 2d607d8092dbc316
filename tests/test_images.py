from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlforge.data.images import (
    IMAGE_EXTENSIONS,
    ImageAugmenter,
    as_image_array,
    load_image_folder,
    load_image_paths,
)
from dlforge.errors import DataError

RNG = np.random.default_rng(0)


def save(path: Path, h: int = 6, w: int = 5, mode: str = "RGB", value: int | None = None) -> Path:
    """A tiny random (or constant) image file; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = (np.full((h, w, c), value, np.uint8) if value is not None
           else RNG.integers(0, 256, (h, w, c), dtype=np.uint8))
    Image.fromarray(arr[..., 0] if c == 1 else arr, mode).save(path)
    return path


def esc(path: Path | str) -> str:
    return re.escape(str(path))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """dog: 2 RGB images; cat: 1 gray png, 1 RGBA png; plus things that must be ignored."""
    root = tmp_path / "imgs"
    save(root / "dog" / "b.PNG")
    save(root / "dog" / "a.jpg")
    save(root / "cat" / "2.png", mode="RGBA")
    save(root / "cat" / "1.png", mode="L", value=77)
    save(root / "cat" / ".hidden.png")
    save(root / ".secret" / "x.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("loose files in the root are ignored")
    (root / "empty").mkdir()  # a class folder without images is skipped
    return root


# ------------------------------------------------------------------------------- folders
def test_folder_labels_order_and_shape(folder: Path):
    images, labels, paths = load_image_folder(folder)
    assert labels == ["cat", "cat", "dog", "dog"]
    assert paths == ["cat/1.png", "cat/2.png", "dog/a.jpg", "dog/b.PNG"]
    assert images.shape == (4, 6, 5, 3) and images.dtype == np.uint8
    assert (images[0] == 77).all()  # the gray image became RGB by repeating its channel
    rgba = np.asarray(Image.open(folder / "cat" / "2.png"))
    assert np.array_equal(images[1], rgba[..., :3])  # alpha dropped


def test_folder_all_gray_stays_one_channel_and_channels_option(tmp_path: Path):
    for cls in ("a", "b"):
        save(tmp_path / cls / "1.png", mode="L", value=10)
    assert load_image_folder(tmp_path)[0].shape == (2, 6, 5, 1)
    assert load_image_folder(tmp_path, channels="rgb")[0].shape == (2, 6, 5, 3)
    save(tmp_path / "c" / "1.png", mode="RGB")
    assert load_image_folder(tmp_path)[0].shape == (3, 6, 5, 3)  # mixed → RGB
    gray = load_image_folder(tmp_path, channels="gray")[0]
    expected = np.asarray(Image.open(tmp_path / "c" / "1.png").convert("L"))
    assert gray.shape == (3, 6, 5, 1) and np.array_equal(gray[2, ..., 0], expected)


def test_folder_resize(tmp_path: Path):
    save(tmp_path / "a" / "1.png", h=10, w=12)
    save(tmp_path / "b" / "1.png", h=4, w=4, mode="L")
    images, labels, _ = load_image_folder(tmp_path, size=(8, 6))
    assert images.shape == (2, 8, 6, 3) and labels == ["a", "b"]
    expected = Image.open(tmp_path / "a" / "1.png").resize((6, 8), Image.Resampling.BILINEAR)
    assert np.array_equal(images[0], np.asarray(expected))


def test_folder_different_sizes_need_a_size(tmp_path: Path):
    save(tmp_path / "a" / "1.png", h=6, w=5)
    save(tmp_path / "b" / "1.png", h=7, w=5)
    msg = (f"{esc(tmp_path / 'b' / '1.png')}: image is 7x5 .* first image, "
           f"{esc(tmp_path / 'a' / '1.png')}, is 6x5; set a resize size")
    with pytest.raises(DataError, match=msg):
        load_image_folder(tmp_path)


def test_folder_errors(tmp_path: Path):
    with pytest.raises(DataError, match=f"{esc(tmp_path / 'nope')}: image folder not found"):
        load_image_folder(tmp_path / "nope")
    file = save(tmp_path / "x.png")
    with pytest.raises(DataError, match=f"{esc(file)}: not a folder"):
        load_image_folder(file)
    root = tmp_path / "flat"
    save(root / "1.png")
    with pytest.raises(DataError, match=f"{esc(root)}: no class sub-folders; expected one folder "
                                        f"of images per class, e.g. {esc(root / 'cat' / '1.png')}"):
        load_image_folder(root)
    save(root / "cat" / "1.png")
    (root / "dog").mkdir()
    (root / "dog" / "x.txt").write_text("")
    with pytest.raises(DataError, match="only class 'cat' has image files; expected at least 2"):
        load_image_folder(root)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files in the class sub-folders"):
        load_image_folder(empty)


def test_unreadable_image_names_the_file(tmp_path: Path):
    save(tmp_path / "a" / "1.png")
    bad = tmp_path / "b" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match=f"^{esc(bad)}: not a readable image \\(.+\\)$"):
        load_image_folder(tmp_path)


def test_extensions():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == set(
        IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------------- paths
def test_paths_in_order_and_errors(tmp_path: Path):
    a = save(tmp_path / "a.png", value=1)
    b = save(tmp_path / "b.bmp", value=2)
    images = load_image_paths([str(b), a])
    assert images.shape == (2, 6, 5, 3) and images[0, 0, 0, 0] == 2 and images[1, 0, 0, 0] == 1
    missing = tmp_path / "gone.png"
    with pytest.raises(DataError, match=f"{esc(missing)}: image file not found"):
        load_image_paths([a, missing])
    with pytest.raises(DataError, match="images: no images"):
        load_image_paths([])
    c = save(tmp_path / "c.png", h=9, w=5)
    with pytest.raises(DataError, match=f"{esc(c)}: image is 9x5 .*{esc(a)}, is 6x5"):
        load_image_paths([a, c])
    assert load_image_paths([a, c], size=(3, 4)).shape == (2, 3, 4, 3)


# -------------------------------------------------------------------------------- arrays
def test_array_nhw_is_grayscale_uint8():
    x = RNG.integers(0, 256, (4, 6, 5), dtype=np.uint8)
    out = as_image_array(x)
    assert out.shape == (4, 6, 5, 1) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], x)
    assert as_image_array(x, channels="rgb").shape == (4, 6, 5, 3)


def test_array_nhwc_float_keeps_range_and_resizes():
    from sklearn.datasets import load_digits

    digits = load_digits().images[:10]  # (10, 8, 8) float64 in 0..16
    out = as_image_array(digits)
    assert out.shape == (10, 8, 8, 1) and out.dtype == np.float32
    assert np.allclose(out[..., 0], digits)
    x = RNG.random((3, 6, 5, 4))  # RGBA floats: alpha dropped
    out = as_image_array(x, size=(4, 10))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x[..., :3]).float().permute(0, 3, 1, 2), size=(4, 10), mode="bilinear",
        align_corners=False, antialias=False).permute(0, 2, 3, 1).numpy()
    assert out.shape == (3, 4, 10, 3) and out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-6)
    gray = as_image_array(x, channels="gray")
    assert np.allclose(gray[..., 0], x[..., :3] @ [0.299, 0.587, 0.114], atol=1e-5)


def test_uint8_rgb_to_gray_matches_pillow():
    x = RNG.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    out = as_image_array(x, channels="gray")
    assert np.array_equal(out[1, ..., 0], np.asarray(Image.fromarray(x[1]).convert("L")))


def test_list_of_arrays_and_paths(tmp_path: Path):
    gray = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = as_image_array([gray, rgb, save(tmp_path / "x.png", value=9)])
    assert np.array_equal(as_image_array(np.array([str(tmp_path / "x.png")])), out[2:])
    assert out.shape == (3, 6, 5, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], np.repeat(gray[..., None], 3, axis=-1))
    assert (out[2] == 9).all()
    resized = as_image_array([gray, RNG.integers(0, 256, (9, 9), dtype=np.uint8)], size=(6, 5))
    assert resized.shape == (2, 6, 5, 1)
    column = np.empty(2, dtype=object)  # e.g. a pandas column of arrays
    column[0], column[1] = RNG.random((6, 5)), RNG.random((6, 5))
    floats = as_image_array(column)
    assert floats.shape == (2, 6, 5, 1) and floats.dtype == np.float32


def test_array_errors():
    with pytest.raises(DataError, match=r"X: image array has shape \(4, 5\); expected \(N, H, W\)"):
        as_image_array(np.zeros((4, 5)))
    with pytest.raises(DataError, match="channels-first"):
        as_image_array(np.zeros((2, 3, 8, 8)))
    with pytest.raises(DataError, match=r"X: row 2: image is 7x5 .* first image, X: row 1, is 6x5"
                                        ".*set a resize size"):
        as_image_array([np.zeros((6, 5)), np.zeros((7, 5))])
    with pytest.raises(DataError, match=r"X: row 2: image array has shape \(6, 5, 2\)"):
        as_image_array([np.zeros((6, 5)), np.zeros((6, 5, 2))])
    with pytest.raises(DataError, match="X: row 2: image is float32 but the first image"):
        as_image_array([np.zeros((6, 5), np.uint8), np.zeros((6, 5))])
    with pytest.raises(DataError, match="X: row 2: expected an image path or array, got a missing"):
        as_image_array([np.zeros((6, 5)), None])
    bad = np.zeros((2, 4, 4))
    bad[1, 0, 0] = np.nan
    with pytest.raises(DataError, match="X: row 2: image has NaN"):
        as_image_array(bad)


def test_argument_errors():
    with pytest.raises(ValueError, match="channels"):
        as_image_array(np.zeros((1, 4, 4)), channels="bgr")
    with pytest.raises(ValueError, match="size"):
        as_image_array(np.zeros((1, 4, 4)), size=(0, 4))


# ---------------------------------------------------------------------------- augmenter
BATCH = torch.randn(6, 3, 10, 12, generator=torch.Generator().manual_seed(0))
FULL = dict(crop=2, flip=0.5, rotate=20.0, noise=0.1, seed=7)


def test_augmenter_seeded_per_epoch():
    a, b = ImageAugmenter(**FULL), ImageAugmenter(**FULL)
    a.set_epoch(3)
    b.set_epoch(3)
    torch.manual_seed(123)  # the global RNG must not matter
    first = [a(BATCH) for _ in range(2)]
    torch.manual_seed(456)
    assert all(torch.equal(x, b(BATCH)) for x in first)
    assert not torch.equal(first[0], first[1])  # the stream moves on within an epoch
    b.set_epoch(4)
    assert not torch.equal(first[0], b(BATCH))
    a.set_epoch(3)  # a resumed run sees the same augmentation
    assert torch.equal(first[0], a(BATCH))


def test_augmenter_shape_dtype_and_input_untouched():
    original = BATCH.clone()
    out = ImageAugmenter(**FULL)(BATCH)
    assert out.shape == BATCH.shape and out.dtype == BATCH.dtype and torch.isfinite(out).all()
    assert torch.equal(BATCH, original)
    assert ImageAugmenter(**FULL)(BATCH.double()).dtype == torch.float64
    assert ImageAugmenter(crop=30)(BATCH).shape == BATCH.shape  # crop larger than the image


def test_inactive_augmenter_is_identity():
    aug = ImageAugmenter(crop=0, flip=0.0, rotate=0.0, noise=0.0)
    assert not aug.active and ImageAugmenter(noise=0.1).active
    out = aug(BATCH)
    assert torch.equal(out, BATCH) and out is not BATCH


def test_flip_and_crop():
    assert torch.equal(ImageAugmenter(flip=1.0)(BATCH), torch.flip(BATCH, dims=[-1]))
    out = ImageAugmenter(crop=1, seed=1)(BATCH)
    padded = torch.nn.functional.pad(BATCH, (1, 1, 1, 1), mode="reflect")
    for i in range(len(BATCH)):  # each image is one of the 9 windows of its padded version
        assert any(torch.equal(out[i], padded[i, :, y:y + 10, x:x + 12])
                   for y in range(3) for x in range(3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(crop=-1), "crop"), (dict(crop=1.5), "crop"), (dict(flip=1.5), "flip"),
    (dict(flip=-0.1), "flip"), (dict(rotate=181), "rotate"), (dict(rotate=-1), "rotate"),
    (dict(noise=-0.5), "noise"), (dict(noise=float("nan")), "noise"),
])
def test_augmenter_argument_validation(kwargs: dict, name: str):
    with pytest.raises(ValueError, match=name):
        ImageAugmenter(**kwargs)
