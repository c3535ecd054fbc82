"""Loaders for real image sets: MedMNIST `.npz` files and Kaggle-style folders.

Both return an `ImageSet` of uint8 (N, C, H, W) images. Neither needs torch
or torchvision: MedMNIST files are read with numpy and downloaded, when asked,
with urllib from the URL the medmnist package lists.
"""
from __future__ import annotations

import hashlib
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from fedsafe.files import atomic_path

from .imageset import ImageSet

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MEDMNIST_SIZES = (28, 64, 128, 224)


def _subsample(n: int, max_samples: int | None, rng) -> np.ndarray:
    """Sorted random subset of range(n) so that order stays as in the source."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, max_samples, replace=False))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, H, W[, 3]) images to size x size with PIL (bilinear)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


# ------------------------------------------------------------------ MedMNIST
MEDMNIST_INSTALL = "pip install --no-deps medmnist"  # it declares torchvision, which clashes


def _medmnist_info(flag: str | None) -> dict | None:
    """The medmnist package's entry for `flag` (class names, URLs, checksums); None without a
    flag. Without the package a flag's class names are unknown: stop rather than guess."""
    if flag is None:
        return None
    try:
        from medmnist.info import INFO  # importing medmnist pulls in torch: keep it lazy
    except ImportError:
        raise ImportError(f"MedMNIST '{flag}': the class names and download address come from the "
                          f"optional medmnist package, which is not installed; install it with "
                          f"`{MEDMNIST_INSTALL}` (or `make install`, which does), or leave out "
                          "`flag` and set `npz_path` to use numbered class names") from None
    if flag not in INFO:
        raise ValueError(f"unknown MedMNIST flag '{flag}'; known: {sorted(INFO)}")
    return INFO[flag]


def _download_medmnist(flag: str, size: int, root: Path) -> Path:
    """Fetch `<flag>[_<size>].npz` into root, checking the MD5 medmnist lists."""
    info = _medmnist_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    path = root / f"{flag}{suffix}.npz"
    if path.exists():
        return path
    hint = f"download it by hand and put it at {path}, or set the option npz_path"
    url, md5 = info.get(f"url{suffix}"), info.get(f"MD5{suffix}")
    try:
        with atomic_path(path) as tmp:  # an interrupted download leaves no file to trust
            urllib.request.urlretrieve(url, tmp)
            if md5 and hashlib.md5(tmp.read_bytes()).hexdigest() != md5:
                raise RuntimeError("MD5 checksum mismatch")
    except Exception as e:
        raise RuntimeError(f"MedMNIST '{flag}': could not download {url} ({e}); {hint}") from e
    return path


def _read_npz_split(data, split: str, path) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = data[f"{split}_images"], data[f"{split}_labels"]
    except KeyError as e:
        raise ValueError(f"{path}: not a MedMNIST file, missing key {e}") from None
    if y.ndim == 2 and y.shape[1] != 1:
        raise ValueError(f"{path}: labels have shape {y.shape}; only single-label (multi-class) MedMNIST sets are supported")
    return x, y.reshape(-1)


def load_medmnist(
    seed: int,
    flag: str | None = None,
    npz_path: str | None = None,
    size: int = 28,
    root: str = "~/.medmnist",
    max_samples: int | None = None,
) -> ImageSet:
    """Load a MedMNIST 2D set. Train and val are merged into the training split.

    `npz_path` reads an already downloaded file (offline); otherwise
    `<root>/<flag>[_<size>].npz` is used, downloaded first if missing. Images are
    resized to `size` if the file holds another resolution. `max_samples` caps
    each split with a seeded random subset.
    """
    info = _medmnist_info(flag)  # first: a missing package stops before any file is read
    if npz_path is None and flag is None:
        raise ValueError("medmnist: set the option 'flag' (e.g. pathmnist) or 'npz_path'")
    if npz_path is not None:
        path = Path(npz_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"MedMNIST file not found: {path}")
    else:
        file_size = size if size in MEDMNIST_SIZES else 28
        path = _download_medmnist(flag, file_size, Path(root).expanduser())
    try:
        data = np.load(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: cannot read MedMNIST file ({e}); delete it and download again") from e
    if not hasattr(data, "files"):  # a plain .npy array, not an .npz archive
        raise ValueError(f"{path}: not a MedMNIST .npz archive")
    with data:
        xs, ys = zip(*(_read_npz_split(data, s, path) for s in ("train", "val", "test")))
    rng = np.random.default_rng(seed)
    x_tr, y_tr = np.concatenate(xs[:2]), np.concatenate(ys[:2])
    x_te, y_te = xs[2], ys[2]
    i_tr, i_te = _subsample(len(y_tr), max_samples, rng), _subsample(len(y_te), max_samples, rng)
    x_tr, y_tr, x_te, y_te = _resize(x_tr[i_tr], size), y_tr[i_tr], _resize(x_te[i_te], size), y_te[i_te]
    # (N, H, W) grey or (N, H, W, 3) RGB -> (N, C, H, W)
    to_nchw = lambda x: x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    x_tr, x_te = to_nchw(x_tr), to_nchw(x_te)

    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    if info:
        names = [info["label"][str(i)] for i in range(len(info["label"]))]
    else:
        names = [f"class{i}" for i in range(n_classes)]
    return ImageSet(x_tr, y_tr, np.full(len(y_tr), -1), x_te, y_te, names, x_tr.shape[1], size)


# ------------------------------------------------------------- image folders
def _list_split(root: Path, split: str) -> dict[str, list[Path]]:
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"image_folder: missing folder {folder} (expected <root>/Training and <root>/Testing)")
    classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(folder.iterdir()) if d.is_dir()}
    if not classes:
        raise FileNotFoundError(f"image_folder: no class folders in {folder}")
    return classes


def _read_images(files: list[Path], size: int, grayscale: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
                out.append(np.asarray(im))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise ValueError(f"image_folder: cannot read image {f} ({e})") from e
    x = np.stack(out)
    return x[:, None] if grayscale else x.transpose(0, 3, 1, 2)


def load_image_folder(
    seed: int,
    root: str | None = None,
    image_size: int = 64,
    grayscale: bool = True,
    max_samples: int | None = None,
    classes: list[str] | None = None,
) -> ImageSet:
    """Load `<root>/{Training,Testing}/<class>/<images>` (the Kaggle brain-tumour MRI layout).

    Class names are the sorted Training sub-folder names, or `classes` (a subset, in that order,
    e.g. Fed-Safe's two-class glioma task: [notumor, glioma]); every image is
    resized to image_size x image_size. `max_samples` caps each split with a
    seeded random subset, picked before any image is decoded.
    """
    if root is None:
        raise ValueError("image_folder: set the option 'root'")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image_folder: root folder not found: {base}")
    train, test = _list_split(base, "Training"), _list_split(base, "Testing")
    names = sorted(train)
    if classes:
        classes = [classes] if isinstance(classes, str) else classes
        missing = sorted(set(classes) - set(names))
        if missing:
            raise ValueError(f"image_folder: classes {missing} not found in {base / 'Training'} "
                             f"(has {names})")
        names = list(classes)
    extra = sorted(set(test) - set(train))
    if extra:
        raise ValueError(f"image_folder: classes {extra} in {base / 'Testing'} are missing from {base / 'Training'}")
    rng = np.random.default_rng(seed)
    splits = []
    for split, classes in (("Training", train), ("Testing", test)):
        files = [(f, names.index(c)) for c in names for f in classes.get(c, [])]
        if not files:
            raise FileNotFoundError(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {base / split}")
        keep = _subsample(len(files), max_samples, rng)
        files = [files[i] for i in keep]
        splits.append((_read_images([f for f, _ in files], image_size, grayscale), np.array([c for _, c in files])))
    (x_tr, y_tr), (x_te, y_te) = splits
    return ImageSet(x_tr, y_tr, np.full(len(y_tr), -1), x_te, y_te, names, x_tr.shape[1], image_size)
