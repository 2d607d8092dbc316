"""Images: read a folder of class sub-folders, a list of paths or arrays into one
(N, H, W, C) array, and augment batches of normalised images on the training split.

Shared rules of every loader:

``channels``  "auto": grayscale images stay C=1, images with colour (RGB, RGBA, palette, CMYK...)
              become RGB C=3, and if a set mixes both every image becomes RGB; "gray": C=1
              (ITU-R 601 luma, as Pillow converts); "rgb": C=3. An alpha channel is dropped.
``size``      None or (height, width). When given, every image is resized to it (Pillow bilinear
              for uint8 images, ``torch.nn.functional.interpolate`` bilinear for float arrays);
              when None, all images must already have the same size.

Files are read with Pillow: the first frame of an animated or multi-page file, turned upright by
its EXIF orientation; 16-bit grayscale is scaled to 0-255. Images from files are always uint8.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from dlforge.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageAugmenter",
    "as_image_array",
    "load_image_folder",
    "load_image_paths",
]

#: File name endings read as images (compared in lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif",
                                     ".tiff")

_CHANNELS = ("auto", "gray", "rgb")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}  # plus every "I;16..." mode
_RESIZE_HINT = "set a resize size (inputs[].size / --image-size HxW) to train on images of " \
               "different sizes"


# ---------------------------------------------------------------------------------- helpers
def _check_args(size: Any, channels: Any) -> tuple[int, int] | None:
    if channels not in _CHANNELS:
        raise ValueError(f"channels must be one of {list(_CHANNELS)}, got {channels!r}")
    if size is None:
        return None
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
               for v in (h, w)):
        raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    return int(h), int(w)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_gray_mode(mode: str) -> bool:
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _open(path: Path) -> Image.Image:
    """A file as a Pillow image in mode "L" or "RGB" (first frame, EXIF-upright)."""
    shown = str(path)
    if not path.exists():
        raise DataError(f"{shown}: image file not found")
    if path.is_dir():
        raise DataError(f"{shown}: is a folder; expected an image file")
    try:
        with Image.open(path) as im:
            im.load()
            upright = ImageOps.exif_transpose(im) or im
            out = _normal_mode(upright)
            return out.copy() if out is im else out  # ``im`` is closed on leaving the block
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as e:
        reason = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
        raise DataError(f"{shown}: not a readable image ({reason})") from None


def _normal_mode(im: Image.Image) -> Image.Image:
    """``im`` as "L" (any grayscale mode; 16/32-bit integers scaled from 0-65535) or "RGB"."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "I" or mode.startswith("I;16"):
        x = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(x / 257.0), 0, 255).astype(np.uint8), "L")
    return im.convert("L" if _is_gray_mode(mode) else "RGB")


def _luma_uint8(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) → gray (..., 1) with Pillow's exact integer ITU-R 601 formula."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _to_channels(x: np.ndarray, c: int) -> np.ndarray:
    """(..., C) with C in 1 or 3 → (..., c); uint8 or float32."""
    if x.shape[-1] == c:
        return x
    if c == 3:
        return np.repeat(x, 3, axis=-1)
    if x.dtype == np.uint8:
        return _luma_uint8(x)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (x @ weights)[..., None].astype(np.float32)


def _resize_uint8(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 → (h, w, C) with Pillow's bilinear filter."""
    if x.shape[:2] == size:
        return x
    im = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
    out = np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out[..., None] if out.ndim == 2 else out


def _resize_float(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) float32 → (N, h, w, C), bilinear without antialiasing."""
    if x.shape[1:3] == size:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())


def _mismatch(name: str, hw: tuple[int, ...], first: str, hw0: tuple[int, ...]) -> DataError:
    return DataError(f"{name}: image is {hw[0]}x{hw[1]} (HxW) but the first image, {first}, is "
                     f"{hw0[0]}x{hw0[1]}; {_RESIZE_HINT}")


def _check_finite(x: np.ndarray, name: str) -> None:
    if x.dtype != np.uint8 and not np.isfinite(x).all():
        raise DataError(f"{name}: image has NaN or infinite values; expected finite numbers")


def _item_array(item: Any, name: str) -> np.ndarray:
    """One per-image array as (H, W, C) with C in 1 or 3 (alpha dropped); uint8 or float32."""
    x = np.asarray(item)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{name}: image array has dtype {x.dtype}; expected numbers")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
        raise DataError(f"{name}: image array has shape {tuple(x.shape)}; expected (H, W) or "
                        "(H, W, C) with C = 1, 3 or 4")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: image array has shape {tuple(x.shape)}; the image is empty")
    x = x[..., :3] if x.shape[-1] == 4 else x
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def _collect(items: Sequence[Any], names: list[str], size: tuple[int, int] | None,
             channels: str, source: str) -> np.ndarray:
    """Read paths, Pillow images or per-image arrays into one (N, H, W, C) array."""
    if len(items) == 0:
        raise DataError(f"{source}: no images; expected at least one image path or array")
    fixed = {"gray": 1, "rgb": 3}.get(channels)
    out: list[np.ndarray] = []
    for i, item in enumerate(items):
        name = names[i]
        if isinstance(item, str | os.PathLike):
            item = _open(Path(item))
        if isinstance(item, Image.Image):
            im = _normal_mode(item)
            if fixed is not None and im.mode != ("L" if fixed == 1 else "RGB"):
                im = im.convert("L" if fixed == 1 else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            x = np.asarray(im)
            x = x[..., None] if x.ndim == 2 else x
        elif isinstance(item, np.ndarray | torch.Tensor):
            x = _item_array(item, name)
            _check_finite(x, name)
            if fixed is not None:
                x = _to_channels(x, fixed)
            if size is not None:
                x = (_resize_uint8(x, size) if x.dtype == np.uint8
                     else _resize_float(x[None], size)[0])
        else:
            missing = item is None or (isinstance(item, float) and math.isnan(item))
            shown = "a missing value" if missing else f"{type(item).__name__} {item!r}"[:80]
            raise DataError(f"{name}: expected an image path or array, got {shown}")
        if out:
            if size is None and x.shape[:2] != out[0].shape[:2]:
                raise _mismatch(name, x.shape[:2], names[0], out[0].shape[:2])
            if (x.dtype == np.uint8) != (out[0].dtype == np.uint8):
                raise DataError(f"{name}: image is {x.dtype} but the first image, {names[0]}, "
                                f"is {out[0].dtype}; expected all uint8 (0-255) or all numbers "
                                "of one other type")
        out.append(x)
    c = fixed or (3 if any(x.shape[-1] == 3 for x in out) else 1)
    return np.stack([_to_channels(x, c) for x in out])


def _from_batch(values: np.ndarray, size: tuple[int, int] | None, channels: str,
                source: str) -> np.ndarray:
    """A whole (N, H, W) or (N, H, W, C) numeric array, without a per-image loop if possible."""
    x = values[..., None] if values.ndim == 3 else values
    if values.ndim not in (3, 4) or x.shape[-1] not in (1, 3, 4):
        hint = ("; a channels-first (N, C, H, W) array must be transposed to (N, H, W, C)"
                if values.ndim == 4 and values.shape[1] in (1, 3, 4) else "")
        raise DataError(f"{source}: image array has shape {tuple(values.shape)}; expected "
                        f"(N, H, W) or (N, H, W, C) with C = 1, 3 or 4{hint}")
    if x.shape[0] == 0:
        raise DataError(f"{source}: no images; the image array has shape {tuple(values.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(f"{source}: image array has shape {tuple(values.shape)}; the images "
                        "are empty")
    x = x[..., :3] if x.shape[-1] == 4 else x
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            _check_finite(x[bad][:1], f"{source}: row {int(np.flatnonzero(bad)[0]) + 1}")
    c = {"gray": 1, "rgb": 3}.get(channels, x.shape[-1])
    x = _to_channels(x, c)
    if size is not None and x.shape[1:3] != size:
        if x.dtype == np.uint8:
            x = np.stack([_resize_uint8(img, size) for img in x])
        else:
            x = _resize_float(x, size)
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------- loaders
def load_image_folder(root: str | Path, size: tuple[int, int] | None = None,
                      channels: str = "auto") -> tuple[np.ndarray, list[str], list[str]]:
    """Read ``root/<class>/<image>`` files: (images (N, H, W, C) uint8, labels, paths relative
    to ``root``). Classes and files are sorted by name; files in nested folders of a class
    count for it; hidden files and folders and files without an image extension are ignored."""
    size = _check_args(size, channels)
    folder = Path(root)
    example = f"e.g. {folder / 'cat' / '1.png'}"
    if not folder.exists():
        raise DataError(f"{root}: image folder not found; expected a folder of class "
                        f"sub-folders, {example}")
    if not folder.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder of class sub-folders")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected one folder of images per "
                        f"class, {example}")
    labels: list[str] = []
    rels: list[str] = []
    for cls in classes:
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            found += [(here / f).relative_to(folder).as_posix() for f in sorted(filenames)
                      if not f.startswith(".") and _is_image_file(here / f)]
        labels += [cls] * len(found)
        rels += found
    with_images = sorted(set(labels))
    if len(with_images) < 2:
        got = (f"only class {with_images[0]!r} has image files" if with_images
               else f"no image files in the class sub-folders {classes}")
        raise DataError(f"{root}: {got}; expected at least 2 class sub-folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}), {example}")
    names = [str(folder / r) for r in rels]
    images = _collect([folder / r for r in rels], names, size, channels, str(root))
    return images, labels, rels


def load_image_paths(paths: Sequence[str | Path], size: tuple[int, int] | None = None,
                     channels: str = "auto", source: str = "images") -> np.ndarray:
    """Read image files into one (N, H, W, C) uint8 array, in the order given."""
    size = _check_args(size, channels)
    if isinstance(paths, str | os.PathLike):
        raise DataError(f"{source}: got the single path {str(paths)!r}; expected a list of "
                        "image file paths")
    items = list(paths)
    for i, p in enumerate(items):
        if not isinstance(p, str | os.PathLike):
            raise DataError(f"{source}: row {i + 1}: expected an image file path, got "
                            f"{type(p).__name__} {p!r}"[:200])
    return _collect(items, [str(p) for p in items], size, channels, source)


def as_image_array(values: Any, size: tuple[int, int] | None = None, channels: str = "auto",
                   source: str = "X") -> np.ndarray:
    """Images from an array (N, H, W) (grayscale) or (N, H, W, C) with C in 1, 3, 4, or a
    list of per-image arrays, Pillow images or file paths, as (N, H, W, C) with C in 1 or 3.
    uint8 stays uint8 (paths give uint8); any other dtype becomes float32, its range kept."""
    size = _check_args(size, channels)
    if isinstance(values, str | os.PathLike):
        raise DataError(f"{source}: got the single path {str(values)!r}; expected a list of "
                        "image paths or an array of images")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind in "US" and values.ndim == 1:
        values = values.tolist()  # e.g. np.array of path strings
    if isinstance(values, np.ndarray) and values.dtype != object:
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise DataError(f"{source}: image array has dtype {values.dtype}; expected numbers "
                            "or a list of image paths")
        return _from_batch(values, size, channels, source)
    if isinstance(values, np.ndarray) and values.ndim != 1:
        try:
            numeric = values.astype(np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{source}: object array of shape {values.shape} holds non-numbers; "
                            "expected an image array or a list of image paths or arrays") from None
        return _from_batch(numeric, size, channels, source)
    try:
        items = list(values)
    except TypeError:
        raise DataError(f"{source}: got {type(values).__name__}; expected an image array or a "
                        "list of image paths or arrays") from None
    names = [str(v) if isinstance(v, str | os.PathLike) else f"{source}: row {i + 1}"
             for i, v in enumerate(items)]
    return _collect(items, names, size, channels, source)


# ------------------------------------------------------------------------------ augmentation
class ImageAugmenter:
    """Random crop (pad by ``crop`` pixels with reflection, crop back at a random offset),
    horizontal flip with probability ``flip``, rotation by an angle uniform in
    [-``rotate``, ``rotate``] degrees, and Gaussian noise of std ``noise``, each per image, on
    a batch of normalised float images (B, C, H, W). Applied to the training split only;
    evaluation and prediction never see it.

    Deterministic: every random number comes from a ``torch.Generator`` seeded by
    ``(seed, epoch)``; call :meth:`set_epoch` at the start of each epoch (the trainer does), so
    the same batches give the same outputs and a resumed run sees the same augmentations.
    """

    def __init__(self, crop: int = 0, flip: float = 0.0, rotate: float = 0.0,
                 noise: float = 0.0, seed: int = 0):
        if isinstance(crop, bool) or not isinstance(crop, int | np.integer) or crop < 0:
            raise ValueError(f"augment.crop must be an integer >= 0, got {crop!r}")
        if not (isinstance(flip, int | float) and 0.0 <= flip <= 1.0):
            raise ValueError(f"augment.flip must be in [0, 1], got {flip!r}")
        if not (isinstance(rotate, int | float) and 0.0 <= rotate <= 180.0):
            raise ValueError(f"augment.rotate must be in [0, 180] degrees, got {rotate!r}")
        if not (isinstance(noise, int | float) and 0.0 <= noise < math.inf):
            raise ValueError(f"augment.noise must be a finite number >= 0, got {noise!r}")
        self.crop, self.flip, self.rotate, self.noise = int(crop), float(flip), float(rotate), \
            float(noise)
        self.seed = int(seed)
        self.set_epoch(0)

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.rotate or self.noise)

    def set_epoch(self, epoch: int) -> None:
        state = np.random.SeedSequence([self.seed % 2**64, int(epoch) % 2**64, 0x1A6])
        self.generator = torch.Generator().manual_seed(
            int(state.generate_state(1, np.uint64)[0]))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim != 4:
            raise ValueError(f"expected a batch of images (B, C, H, W), got shape "
                             f"{tuple(batch.shape)}")
        g, (b, _, h, w) = self.generator, batch.shape
        x = batch.float() if batch.dtype != torch.float32 else batch
        if self.crop:
            p = self.crop
            mode = "reflect" if p < h and p < w else "replicate"
            padded = F.pad(x, (p, p, p, p), mode=mode)
            oy, ox = torch.randint(0, 2 * p + 1, (2, b), generator=g).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            idx = torch.arange(b, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[idx, chans, rows, cols]
        if self.flip:
            hit = (torch.rand(b, generator=g) < self.flip).to(x.device)
            x = torch.where(hit[:, None, None, None], x.flip(-1), x)
        if self.rotate:
            from kornia.geometry.transform import rotate

            angles = (torch.rand(b, generator=g) * 2 - 1) * self.rotate
            x = rotate(x, angles.to(x.device), mode="bilinear", padding_mode="reflection")
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=g).to(x.device)
        out = x.to(batch.dtype)
        return out.clone() if out.data_ptr() == batch.data_ptr() else out
