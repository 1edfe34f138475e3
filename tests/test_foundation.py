"""Foundation: data loaders on the real offline data, error messages, cache, the data tour (harness: test_harness.py)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

import manifold_nb.data as data
from manifold_nb.cache import cached_model

FIXTURES = Path(__file__).parent / "fixtures" / "nbs"


# --- data -------------------------------------------------------------------------------------------------------
def test_mnist_real_files():
    X, y = data.load_mnist("train", n=3, normalize=False)
    assert X.shape == (3, 1, 28, 28) and X.dtype == torch.float32 and 0 <= X.min() and X.max() <= 1
    assert y.tolist() == [5, 0, 4]                      # the first three MNIST training labels
    Xt, yt = data.load_mnist("test", n=2, offset=9998)
    assert yt.tolist() == [5, 6]                        # the last two test labels
    assert abs(float(data.load_mnist("test")[0].mean())) < 0.02   # normalised: mean ~0 over the test set


def test_fashion_mnist_real_files():
    X, y = data.load_fashion_mnist("train", n=2)
    assert y.tolist() == [9, 0] and X.shape == (2, 1, 28, 28) and float(X.max()) <= 1
    assert len(data.load_fashion_mnist("test")[1]) == 10000


def test_cifar10_partial_copy_counts_and_resize():
    files = data.cifar10_files()
    assert files == {"data_batch_1": 10000, "data_batch_2": 10000, "data_batch_3": 9000, "test_batch": 1000}
    X, y = data.load_cifar10("test", n=4)
    assert X.shape == (4, 3, 64, 64) and 0 <= X.min() and X.max() <= 1 and y.tolist() == [3, 8, 8, 0]
    X32, _ = data.load_cifar10("train", n=1, size=32)
    assert X32.shape == (1, 3, 32, 32) and len(data.load_cifar10("train", size=32)[1]) == 29000


def test_subsets_seeded_and_ordered():
    a = data.load_mnist("test", n=50, seed=1)[1]; b = data.load_mnist("test", n=50, seed=1)[1]
    assert torch.equal(a, b) and not torch.equal(a, data.load_mnist("test", n=50, seed=2)[1])
    with pytest.raises(ValueError, match="the split has 1000"): data.load_cifar10("test", n=1001)
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


# --- cache ------------------------------------------------------------------------------------------------------
def _lin(): torch.manual_seed(0); return torch.nn.Linear(2, 1)

def test_cache_miss_hit_and_interrupted_write(tmp_path, capsys):
    trained = []
    def train(m): trained.append(1); return {"loss": [1.0]}
    m1 = cached_model("lin", {"a": 1}, _lin, train, root=tmp_path)
    m2 = cached_model("lin", {"a": 1}, _lin, train, root=tmp_path)
    assert len(trained) == 1 and not m1.cache_info["hit"] and m2.cache_info["hit"]
    assert "[cache] hit" in capsys.readouterr().out
    def interrupted(m): raise RuntimeError("killed")
    with pytest.raises(RuntimeError): cached_model("lin", {"a": 2}, _lin, interrupted, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [Path(m1.cache_info["path"]).name]


# --- the data tour, run through the harness ---------------------------------------------------------------------
def test_data_notebook_quick(run_notebook):
    out, m = run_notebook("data", n=100)
    assert m["mnist_train"] == 60000 and m["fashion_test"] == 10000 and m["cifar10_train"] == 29000
    assert abs(m["mnist"]["mean"]) < 0.2 and sum(m["mnist"]["class_counts"]) == 100
    assert {"figures/mnist_samples.png", "figures/cifar10_samples.png"} <= set(m["figures"])
    assert (out / "data.ipynb").exists()
