"""Data layer: loaders on the real offline data, counts from the files present, corrupt files named, rotated-MNIST store."""
import gzip, os, pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import manifold_nb.data as data
from manifold_nb.data import CorruptDataError


# --- the real files ------------------------------------------------------------------------------------------------
def test_mnist_real_files():
    X, y = data.load_mnist("train", n=3, normalize=False)
    assert X.shape == (3, 1, 28, 28) and X.dtype == torch.float32 and 0 <= X.min() and X.max() <= 1
    assert y.tolist() == [5, 0, 4]                      # the first three MNIST training labels
    n_test = data.split_sizes("mnist").test
    Xt, yt = data.load_mnist("test", n=2, offset=n_test - 2)
    assert yt.tolist() == [5, 6]                        # the last two test labels
    assert abs(float(data.load_mnist("test")[0].mean())) < 0.02   # normalised: mean ~0 over the test set


def test_fashion_mnist_real_files():
    X, y = data.load_fashion_mnist("train", n=2)
    assert y.tolist() == [9, 0] and X.shape == (2, 1, 28, 28) and float(X.max()) <= 1
    assert len(data.load_fashion_mnist("test")[1]) == data.split_sizes("fashion_mnist").test


def test_cifar10_counts_from_the_files_present_and_resize():
    files = data.cifar10_files()
    sizes = data.split_sizes("cifar10")
    assert sizes.train == sum(v for k, v in files.items() if k.startswith("data_batch_")) and sizes.test == files["test_batch"]
    d = data.find_root("cifar10") / "cifar-10-batches-py"     # each count independently from the pickles themselves
    for name, n in files.items():
        with open(d / name, "rb") as f: assert len(pickle.load(f, encoding="latin1")["labels"]) == n
    X, y = data.load_cifar10("test", n=4)
    assert X.shape == (4, 3, 64, 64) and 0 <= X.min() and X.max() <= 1 and y.tolist() == [3, 8, 8, 0]
    X32, _ = data.load_cifar10("train", n=1, size=32)
    assert X32.shape == (1, 3, 32, 32) and len(data.load_cifar10("train", size=32)[1]) == sizes.train


def test_subsets_seeded_and_ordered():
    a = data.load_mnist("test", n=50, seed=1)[1]; b = data.load_mnist("test", n=50, seed=1)[1]
    assert torch.equal(a, b) and not torch.equal(a, data.load_mnist("test", n=50, seed=2)[1])
    n_test = data.split_sizes("cifar10").test
    with pytest.raises(ValueError, match=f"the split has {n_test}"): data.load_cifar10("test", n=n_test + 1)
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"): data.load_mnist("val")


def test_missing_data_error_names_every_place(monkeypatch, tmp_path):
    monkeypatch.delenv("MANIFOLD_NB_DATA", raising=False)
    monkeypatch.setenv("MANIFOLD_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_checkout_data", lambda: tmp_path / "shared" / "data")
    monkeypatch.setattr(data, "_debian_files", lambda package: [])
    monkeypatch.setattr(data, "_download", lambda dataset, root: None)
    with pytest.raises(data.DataNotFoundError) as e: data.find_root("fashion_mnist")
    msg = str(e.value)
    for part in ("shared/data beside the checkout", "cache folder", "Debian package dataset-fashion-mnist",
                 "torchvision download", "apt-get install -y dataset-fashion-mnist"):
        assert part in msg, (part, msg)


def test_explicit_root_is_searched_alone(monkeypatch):
    monkeypatch.setenv("MANIFOLD_NB_DATA", "/nonexistent")
    with pytest.raises(data.DataNotFoundError, match=r"\$MANIFOLD_NB_DATA: /nonexistent"): data.find_root("mnist")


def test_debian_fashion_mnist_is_decompressed_into_the_cache(monkeypatch, tmp_path):
    if not data._debian_files("dataset-fashion-mnist"): pytest.skip("dataset-fashion-mnist not installed")
    root = data._from_debian("fashion_mnist", tmp_path)
    assert data._has("fashion_mnist", root)
    assert (tmp_path / "FashionMNIST/raw/train-images-idx3-ubyte").stat().st_size == 47040016


def test_damaged_fashion_mnist_copy_in_the_cache_is_decompressed_again(monkeypatch, tmp_path):
    if not data._debian_files("dataset-fashion-mnist"): pytest.skip("dataset-fashion-mnist not installed")
    monkeypatch.delenv("MANIFOLD_NB_DATA", raising=False)
    monkeypatch.setenv("MANIFOLD_NB_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "_checkout_data", lambda: tmp_path / "nowhere")
    monkeypatch.setattr(data, "_download", lambda dataset, root: None)
    root = data.find_root("fashion_mnist")
    f = root / "FashionMNIST/raw/t10k-labels-idx1-ubyte"; good = f.read_bytes()
    os.truncate(f, 96)                                                   # e.g. a disk that filled up
    assert not data._idx_intact(f)
    assert data.find_root("fashion_mnist") == root and f.read_bytes() == good


# --- a complete CIFAR-10 (built from the local batches) ------------------------------------------------------------
def test_full_size_cifar10_is_read_at_its_real_size(full_cifar10):
    root, X, y = full_cifar10                          # X, y: the rows written, train batches then the test batch
    assert data.split_sizes("cifar10", root) == (50_000, 10_000)
    assert data.cifar10_files(root) == {**{f"data_batch_{k}": 10_000 for k in range(1, 6)}, "test_batch": 10_000}
    with pytest.raises(ValueError, match="the split has 50000"): data.load_cifar10("train", n=50_001, root=root, size=32)
    Xt, yt = data.load_cifar10("test", root=root, size=32)
    assert len(yt) == 10_000 and torch.equal(yt, torch.from_numpy(y[50_000:]))
    assert torch.equal(Xt[-1], torch.from_numpy(X[-1]).float().div(255).reshape(3, 32, 32))
    Xl, yl = data.load_cifar10("train", n=3, offset=49_997, root=root, size=32)   # the last rows of data_batch_5
    assert torch.equal(yl, torch.from_numpy(y[49_997:50_000]))
    assert torch.equal(Xl, torch.from_numpy(X[49_997:50_000]).float().div(255).reshape(3, 3, 32, 32))
    data._read_cifar_batch.cache_clear(); data._cifar_concat.cache_clear()   # free the 180 MB read here


# --- corrupt MNIST files (issue 11.3), built from the real ones ------------------------------------------------------
def _raw(): return data.find_root("mnist") / "MNIST" / "raw"

def _mnist_root(tmp_path, **files):
    "A data root whose MNIST/raw/ links to the real files, except `files`: name -> bytes to write, or None to leave out."
    raw = tmp_path / "MNIST" / "raw"; raw.mkdir(parents=True)
    for fi, fl in data._IDX.values():
        for name in (fi, fl):
            if name not in files: (raw / name).symlink_to(_raw() / name)
    for name, content in files.items():
        if content is not None: (raw / name.replace("__", ".")).write_bytes(content)
    return tmp_path

def _real(name): return (_raw() / name).read_bytes()

def _load_error(root, split):
    with pytest.raises(CorruptDataError) as e: data.load_mnist(split, root=root)
    assert isinstance(e.value, ValueError)
    return str(e.value)

def test_truncated_image_file_names_file_expected_and_found(tmp_path):
    root = _mnist_root(tmp_path, **{"train-images-idx3-ubyte": _real("train-images-idx3-ubyte")[:4_482_012]})
    msg = _load_error(root, "train")
    assert "train-images-idx3-ubyte" in msg and "expected an idx images file (magic 2051)" in msg
    assert "4,482,012 bytes, while its header (60000 x 28 x 28) needs 47,040,016: truncated" in msg

def test_empty_file(tmp_path):
    msg = _load_error(_mnist_root(tmp_path, **{"t10k-labels-idx1-ubyte": b""}), "test")
    assert "t10k-labels-idx1-ubyte: expected an idx labels file (magic 2049); found an empty file (0 bytes)" in msg

def test_gzip_bytes_under_the_uncompressed_name(tmp_path):
    gz = (_raw() / "t10k-images-idx3-ubyte.gz").read_bytes()
    msg = _load_error(_mnist_root(tmp_path, **{"t10k-images-idx3-ubyte": gz}), "test")
    assert "t10k-images-idx3-ubyte: expected an idx images file" in msg and "gzip-compressed bytes under an uncompressed name" in msg

def test_image_and_label_files_swapped(tmp_path):
    root = _mnist_root(tmp_path, **{"t10k-images-idx3-ubyte": _real("t10k-labels-idx1-ubyte"),
                                    "t10k-labels-idx1-ubyte": _real("t10k-images-idx3-ubyte")})
    msg = _load_error(root, "test")
    assert "t10k-images-idx3-ubyte: expected an idx images file (magic 2051); found magic 2049, an idx labels file" in msg
    assert "swapped" in msg

def test_label_count_differs_from_image_count(tmp_path):
    labels = _real("t10k-labels-idx1-ubyte")
    n = int.from_bytes(labels[4:8], "big") - 1                       # one label fewer, header consistent with it
    msg = _load_error(_mnist_root(tmp_path, **{"t10k-labels-idx1-ubyte": labels[:4] + n.to_bytes(4, "big") + labels[8:-1]}), "test")
    assert f"found {n + 1} images in t10k-images-idx3-ubyte and {n} labels in t10k-labels-idx1-ubyte" in msg

def test_wrong_image_size_and_extra_bytes(tmp_path):
    imgs = _real("t10k-images-idx3-ubyte")
    bad_side = imgs[:12] + (27).to_bytes(4, "big") + imgs[16:]       # header says 28 x 27
    msg = _load_error(_mnist_root(tmp_path / "a", **{"t10k-images-idx3-ubyte": bad_side}), "test")
    assert "images of 28x27 pixels in its header, not 28x28" in msg
    msg = _load_error(_mnist_root(tmp_path / "b", **{"t10k-images-idx3-ubyte": imgs + b"\0"}), "test")
    assert "7,840,017 bytes, while its header (10000 x 28 x 28) needs 7,840,016: extra bytes at the end" in msg

def test_label_values_out_of_range(tmp_path):
    labels = bytearray(_real("t10k-labels-idx1-ubyte")); labels[-1] = 10
    msg = _load_error(_mnist_root(tmp_path, **{"t10k-labels-idx1-ubyte": bytes(labels)}), "test")
    assert "expected labels 0-9; found values up to 10" in msg

def test_gz_files_read_and_checked(tmp_path):
    # the compressed files alone give the same arrays as the plain ones ...
    root = _mnist_root(tmp_path / "ok", **{"t10k-images-idx3-ubyte": None, "t10k-labels-idx1-ubyte": None,
                                          "t10k-images-idx3-ubyte__gz": (_raw() / "t10k-images-idx3-ubyte.gz").read_bytes(),
                                          "t10k-labels-idx1-ubyte__gz": (_raw() / "t10k-labels-idx1-ubyte.gz").read_bytes()})
    Xg, yg = data.load_mnist("test", root=root); Xp, yp = data.load_mnist("test")
    assert torch.equal(Xg, Xp) and torch.equal(yg, yp)
    # ... and a .gz that is not gzip, or a gzipped file truncated in its header, is named
    root = _mnist_root(tmp_path / "bad", **{"t10k-labels-idx1-ubyte": None, "t10k-labels-idx1-ubyte__gz": _real("t10k-labels-idx1-ubyte")})
    assert "t10k-labels-idx1-ubyte.gz: expected gzip-compressed data" in _load_error(root, "test")
    root = _mnist_root(tmp_path / "short", **{"t10k-labels-idx1-ubyte": None,
                                             "t10k-labels-idx1-ubyte__gz": gzip.compress(_real("t10k-labels-idx1-ubyte")[:6])})
    assert "6 bytes, fewer than its 8-byte header" in _load_error(root, "test")


# --- corrupt CIFAR-10 batches -------------------------------------------------------------------------------------
def _cifar_root(tmp_path, test_batch):
    "A CIFAR-10 root whose training batch is the real data_batch_1 and whose test_batch is `test_batch` (bytes or object)."
    d = tmp_path / "cifar-10-batches-py"; d.mkdir(parents=True)
    (d / "data_batch_1").symlink_to(data.find_root("cifar10") / "cifar-10-batches-py" / "data_batch_1")
    (d / "test_batch").write_bytes(test_batch if isinstance(test_batch, bytes) else pickle.dumps(test_batch, protocol=2))
    return tmp_path

def _cifar_error(root):
    with pytest.raises(CorruptDataError) as e: data.load_cifar10("test", root=root, size=32)
    msg = str(e.value)
    assert "test_batch: expected a CIFAR-10 batch (a pickled dict with 'data' (N, 3072) uint8 and 'labels'" in msg
    return msg

_GOOD = dict(data=np.zeros((4, 3072), np.uint8), labels=[0, 1, 2, 9], batch_label="testing batch 1 of 1")

@pytest.mark.parametrize("content, found", [
    (b"", "found an empty file (0 bytes)"),
    (b"\x80\x02not a pickle at all", "found a file that does not unpickle (UnpicklingError"),
    (pickle.dumps(_GOOD, protocol=2)[:100], "found a file that does not unpickle"),
    ([1, 2, 3], "found a pickled list"),
    ({"images": _GOOD["data"], "labels": _GOOD["labels"]}, "found keys ['images', 'labels'], without ['data']"),
    ({**_GOOD, "data": np.zeros((4, 32, 32, 3), np.uint8)}, "found 'data' of shape (4, 32, 32, 3) and dtype uint8"),
    ({**_GOOD, "data": np.zeros((4, 3072), np.float32)}, "found 'data' of shape (4, 3072) and dtype float32"),
    ({**_GOOD, "labels": [0, 1, 2]}, "found 'labels' of shape (3,) and dtype int64 for 4 images"),
    ({**_GOOD, "labels": [0, 1, 2, 10]}, "found 4 labels with values 0 to 10"),
], ids=["empty", "not-a-pickle", "truncated", "list", "wrong-keys", "wrong-shape", "wrong-dtype", "label-count", "label-range"])
def test_corrupt_cifar10_batch_named(tmp_path, content, found):
    assert found in _cifar_error(_cifar_root(tmp_path, content))

def test_good_small_cifar10_batch_is_read(tmp_path):
    X, y = data.load_cifar10("test", root=_cifar_root(tmp_path, _GOOD), size=32)
    assert X.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 2, 9]


# --- rotated MNIST in HDF5 (issue 11.4) ---------------------------------------------------------------------------
def test_rotated_mnist_store_angles_rotation_and_truncation(tmp_path, capsys):
    h5 = data.rotated_mnist_file([1, 7], "test", 4, angle_step=90, seed=0, cache_root=tmp_path)
    X, y, angles = data.load_rotated_mnist(h5)
    assert angles == [0, 90, 180, 270] and X.shape == (8, 4, 1, 28, 28) and y.tolist() == [1] * 4 + [7] * 4
    with h5py.File(h5) as f:
        assert f.attrs["angles"].tolist() == [0, 90, 180, 270] and f.attrs["split"] == "test"
        idx = torch.from_numpy(np.concatenate([f["1"].attrs["mnist_index"], f["7"].attrs["mnist_index"]]))
    originals, labels = data.load_mnist("test", normalize=False)
    assert torch.equal(labels[idx], y)
    assert (X[:, 0] - originals[idx]).abs().max() < 1e-6                         # uint8 storage: lossless for originals
    for k in (1, 2, 3):                                                            # counter-clockwise quarter turns
        assert (X[:, k] - torch.rot90(X[:, 0], k, (-2, -1))).abs().max() <= 1 / 255 + 1e-5
    assert (X[:, 1] - torch.rot90(X[:, 0], -1, (-2, -1))).abs().max() > 0.5       # and not clockwise

    os.truncate(h5, 96)
    capsys.readouterr()
    again = data.rotated_mnist_file([1, 7], "test", 4, angle_step=90, seed=0, cache_root=tmp_path)
    assert again == h5 and "ignoring unreadable entry" in capsys.readouterr().out
    assert torch.equal(data.load_rotated_mnist(again).images, X)
    data.rotated_mnist_file([1, 7], "test", 4, angle_step=90, seed=0, cache_root=tmp_path)
    assert "[cache] hit" in capsys.readouterr().out
    data.rotated_mnist_file([1, 7], "test", 4, angle_step=90, seed=0, cache_root=tmp_path, rebuild=True)
    assert "[cache] rebuild" in capsys.readouterr().out


def test_rotated_mnist_store_with_other_content_is_rebuilt(tmp_path, capsys):
    h5 = data.rotated_mnist_file([3], "test", 2, angle_step=180, seed=0, cache_root=tmp_path)
    with h5py.File(h5, "a") as f: del f["3"]                                    # readable, but the digit is gone
    capsys.readouterr()
    data.rotated_mnist_file([3], "test", 2, angle_step=180, seed=0, cache_root=tmp_path)
    assert "expected digit 3" in capsys.readouterr().out and data.load_rotated_mnist(h5).images.shape == (2, 2, 1, 28, 28)
