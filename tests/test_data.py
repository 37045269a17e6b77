"""bsnn_hw.data: every loader on real or small written files, and one-line errors for bad files."""
import gzip
import pickle
import struct

import numpy as np
import pytest

from bsnn_hw import data


def write_idx(path, arr, gz=True):
    arr = np.asarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_idx_dir(d, n_train=7, n_test=5, gz=True):
    rng = np.random.default_rng(1)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(d / f"{prefix}-images-idx3-ubyte{ext}", x, gz)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{ext}", y, gz)
        sets[prefix] = (x, y)
    return sets


def test_digits_split_and_mapping():
    xtr, ytr = data.load_dataset("digits", "train", seed=0)
    xte, yte = data.load_dataset("digits", "test", seed=0)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert xtr.shape == (1437, 64) and xte.shape == (360, 64)
    # The two splits partition the data set: no test row equals... compare via sklearn order.
    from sklearn.datasets import load_digits
    d = load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(xte, (d.data[perm[:360]].astype(np.int64) * 255 // 16).astype(np.uint8))
    np.testing.assert_array_equal(ytr, d.target[perm[360:]])
    assert set(np.unique(xtr)) <= {v * 255 // 16 for v in range(17)}
    assert xtr.max() == 255 and xtr.min() == 0
    # Another seed gives another split; the same seed the same one.
    assert not np.array_equal(data.load_dataset("digits", "test", seed=1)[1], yte)
    np.testing.assert_array_equal(data.load_dataset("digits", "test", seed=0)[0], xte)


def test_digits_to_uint8_exact():
    np.testing.assert_array_equal(data.digits_to_uint8(np.arange(17)),
                                  [0, 15, 31, 47, 63, 79, 95, 111, 127, 143, 159, 175, 191, 207, 223, 239, 255])
    with pytest.raises(ValueError, match="0..16"):
        data.digits_to_uint8(np.array([17]))


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory(tmp_path, gz):
    sets = make_idx_dir(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = data.load_dataset(str(tmp_path), split)
        np.testing.assert_array_equal(x, sets[prefix][0].reshape(len(y), 12))
        np.testing.assert_array_equal(y, sets[prefix][1])
        assert x.dtype == np.uint8 and y.dtype == np.int64
    # Named IDX data sets take a root.
    x, _ = data.load_dataset("mnist", "test", root=tmp_path)
    assert x.shape == (5, 12)


def test_fashion_mnist_if_installed():
    if not (data.DEFAULT_ROOTS["fashion-mnist"] / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    x, y = data.load_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 784) and y.shape == (10000,) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10


def test_missing_data_dir_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist", root=tmp_path / "nope")


def test_missing_idx_file(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz: no such file"):
        data.load_dataset(str(tmp_path), "test")


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00\x08", "bad magic"),
    (b"\x00\x00\x0d\x03" + b"\x00" * 12, "data type 0x0d"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 5, "found 1 dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + b"\x00" * 7, "holds 7"),
])
def test_malformed_idx(tmp_path, raw, match):
    make_idx_dir(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(raw)
    with pytest.raises(ValueError, match=match) as e:
        data.load_dataset(str(tmp_path), "test")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_idx_count_mismatch(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3), gz=False)
    with pytest.raises(ValueError, match="holds 5 images but .* holds 3 labels"):
        data.load_dataset(str(tmp_path), "test")


def test_bad_gzip(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot be read as gzip"):
        data.load_dataset(str(tmp_path), "test")


def write_cifar(d, n=4):
    rng = np.random.default_rng(2)
    out = {}
    for name in data.CIFAR_FILES["train"] + data.CIFAR_FILES["test"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": b"fake"}, f)
        out[name] = (x, y)
    return out


def test_cifar10(tmp_path):
    batches = write_cifar(tmp_path)
    x, y = data.load_dataset(str(tmp_path), "train")
    assert x.shape == (20, 3072) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:4], batches["data_batch_1"][0])
    np.testing.assert_array_equal(y[16:], batches["data_batch_5"][1])
    xt, yt = data.load_dataset("cifar10", "test", root=tmp_path)
    np.testing.assert_array_equal(xt, batches["test_batch"][0])


def test_cifar10_refuses_code_and_bad_shapes(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": print}, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        data.load_dataset(str(tmp_path), "test")
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"uint8 \(N, 3072\)"):
        data.load_dataset(str(tmp_path), "test")
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        data.load_dataset(str(tmp_path), "train")


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        data.load_dataset("nope")
    with pytest.raises(ValueError, match="split must be"):
        data.load_dataset("digits", "val")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a file"):
        data.load_dataset(str(f))
