"""Data sets as uint8 intensities: ``load_dataset(name_or_path, split, seed) -> (x, y)``.

Every loader returns ``x`` uint8 (N, n_features), the intensities the encoders of :mod:`bsnn_hw.encode` take, and
``y`` int64 (N,) class labels. The trainer and ``bsnn-hw verify`` both use this module, so both see the same inputs.

Sources
-------
``digits``
    scikit-learn's bundled 8x8 digits (1,797 samples, no download). Values 0..16 become uint8 by the exact integer
    rule ``x * 255 // 16`` (0 -> 0, 16 -> 255). Split: a permutation of the 1,797 samples drawn by
    ``numpy.random.default_rng(seed).permutation``; its first 360 samples (20%) are the test split, the other 1,437
    the train split. ``seed`` (default 0) picks the split; train and test never overlap.
``fashion-mnist``
    The original IDX files (``train-images-idx3-ubyte.gz`` ...) under ``/usr/share/datasets/fashion-mnist``, from the
    Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), or under ``root``.
    784 features (28x28, row-major), the official 60,000 / 10,000 split.
``mnist``
    The same IDX layout, under ``root`` (default ``/usr/share/datasets/mnist``).
a directory
    Holding ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]`` (and ``t10k-*`` for the test split),
    or the CIFAR-10 python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``). CIFAR-10 images are
    flattened channel-major as stored (1,024 red, then 1,024 green, then 1,024 blue values): 3,072 features.

The IDX and CIFAR splits are fixed by their files; ``seed`` only affects ``digits``. A missing or malformed file
raises FileNotFoundError or ValueError with one line naming the file and what was expected.

IDX format (LeCun et al.): big-endian magic ``0x00 0x00 0x08 ndim`` (0x08 = unsigned byte), then ``ndim`` big-endian
uint32 sizes, then the data. Images must have ndim 3 (N, rows, cols), labels ndim 1 (N,). CIFAR-10 batches are
Python pickles; they are read with an unpickler that only admits the classes a batch holds (dict, list, bytes, str,
numpy arrays), so a crafted file cannot run code.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
SPLITS = ("train", "test")
ON_DISK = ("fashion-mnist", "mnist", "cifar10")      # the named data sets read from a directory (--data-root)
DEFAULT_ROOTS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
INSTALL_HINTS = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` or pass the directory holding its IDX "
                     "files",
    "mnist": "pass the directory holding the MNIST IDX files (train-images-idx3-ubyte.gz ...)",
    "cifar10": "pass the directory holding the CIFAR-10 python batches (data_batch_1 .. data_batch_5, test_batch)",
}
DIGITS_TEST_SIZE = 360
IDX_PREFIX = {"train": "train", "test": "t10k"}
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load_dataset(name_or_path, split: str = "test", seed: int = 0, root=None) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set split as ``(x uint8 (N, n_features), y int64 (N,))``; see the module docstring.

    ``name_or_path`` is one of :data:`DATASETS` or a directory of IDX files or CIFAR-10 batches; ``root`` overrides
    the directory of a named IDX/CIFAR data set."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    name = str(name_or_path)
    if root is not None and name not in ON_DISK:
        raise ValueError(f"a data root (--data-root) is the directory of a named data set on disk "
                         f"({', '.join(ON_DISK)}); {name!r} takes none")
    if name == "digits":
        return load_digits(split, seed)
    if name in ON_DISK:
        directory = Path(root) if root is not None else DEFAULT_ROOTS.get(name)
        if directory is None or not directory.is_dir():
            where = f"{directory}" if directory is not None else "no directory given"
            raise FileNotFoundError(f"{name}: data directory not found ({where}); {INSTALL_HINTS[name]}")
        if name == "cifar10":
            return load_cifar10(directory, split)
        return load_idx_dir(directory, split, hint=INSTALL_HINTS[name])
    path = Path(name)
    if path.is_dir():
        if (path / "test_batch").exists() or (path / "data_batch_1").exists():
            return load_cifar10(path, split)
        return load_idx_dir(path, split)
    if path.exists():
        raise ValueError(f"{path}: expected a data set name ({', '.join(DATASETS)}) or a directory of IDX files or "
                         f"CIFAR-10 batches, not a file")
    raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)} or an existing directory")


def check_labels(labels, n: int, classes: int):
    """``labels`` as an array: None, or one integer class 0..classes-1 for each of ``n`` samples; a one-line
    TypeError / ValueError otherwise (an out-of-range label would be scored, never matched)."""
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels must be integer classes, not {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(f"labels must be one class per sample ({n}), not shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= classes):
        bad = int(lab.min() if lab.min() < 0 else lab.max())
        raise ValueError(f"labels must be classes 0..{classes - 1}, found {bad}")
    return lab


def n_classes(y: np.ndarray) -> int:
    return int(y.max()) + 1 if y.size else 0


# --- digits ------------------------------------------------------------------------------------------------------

def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """The exact integer map 0..16 -> 0..255: ``v * 255 // 16``."""
    v = np.asarray(values).astype(np.int64)
    if v.size and (v.min() < 0 or v.max() > 16):
        raise ValueError(f"digits values must be in 0..16, not {int(v.min())}..{int(v.max())}")
    return (v * 255 // 16).astype(np.uint8)


def load_digits(split: str = "test", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits
    d = sk_load_digits()
    x = digits_to_uint8(d.data)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    idx = perm[:DIGITS_TEST_SIZE] if split == "test" else perm[DIGITS_TEST_SIZE:]
    return x[idx], y[idx]


# --- IDX -----------------------------------------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} ({e})") from None


def read_idx(path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally .gz) with ``ndim`` dimensions."""
    path = Path(path)
    data = _read_bytes(path)
    what = f"an IDX file of unsigned bytes with {ndim} dimension{'s' if ndim > 1 else ''}"
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not {what} (bad magic {data[:4].hex() or 'none'})")
    if data[2] != 0x08:
        raise ValueError(f"{path}: expected {what}, found data type 0x{data[2]:02x} (0x08 = unsigned byte)")
    if data[3] != ndim:
        raise ValueError(f"{path}: expected {what}, found {data[3]} dimensions")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, expected at least {head})")
    shape = struct.unpack(f">{ndim}I", data[4:head])
    count = int(np.prod(shape))
    if len(data) - head != count:
        raise ValueError(f"{path}: IDX header says shape {shape} ({count} bytes of data) but the file holds "
                         f"{len(data) - head}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape).copy()


def _find(directory: Path, stem: str, hint: str | None) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    extra = f"; {hint}" if hint else ""
    raise FileNotFoundError(f"{directory / (stem + '.gz')}: no such file (expected the IDX file {stem}[.gz] in "
                            f"{directory}){extra}")


def load_idx(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """An IDX image file (N, rows, cols) and label file (N,) -> (x uint8 (N, rows*cols), y int64 (N,))."""
    x = read_idx(images, 3)
    y = read_idx(labels, 1)
    if 0 in x.shape:
        raise ValueError(f"{images}: holds {x.shape[0]} images of {x.shape[1]}x{x.shape[2]} pixels; expected at "
                         f"least one image of at least one pixel")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels; "
                         f"expected the same count")
    return x.reshape(x.shape[0], -1), y.astype(np.int64)


def load_idx_dir(directory, split: str, hint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    directory = Path(directory)
    prefix = IDX_PREFIX[split]
    return load_idx(_find(directory, f"{prefix}-images-idx3-ubyte", hint),
                    _find(directory, f"{prefix}-labels-idx1-ubyte", hint))


# --- CIFAR-10 ------------------------------------------------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 python batch holds (builtins containers and numpy arrays)."""
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "dict"), ("builtins", "list"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (x uint8 (N, 3072), y int64 (N,))."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a CIFAR-10 python batch)")
    try:
        batch = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # any unpickling failure is a malformed file
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a CIFAR-10 batch (a dict with b'data' and b'labels'), "
                         f"found {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected a CIFAR-10 batch with keys b'data' and b'labels'")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be uint8 (N, 3072), not {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: b'labels' must be {data.shape[0]} integers, not {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, found {int(labels.min())}..{int(labels.max())}")
    return data, labels.astype(np.int64)


def load_cifar10(directory, split: str) -> tuple[np.ndarray, np.ndarray]:
    directory = Path(directory)
    parts = [read_cifar_batch(directory / name) for name in CIFAR_FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
