"""Foundation: the model and artefact cache, and the data tour (data layer: test_data.py; harness and CLI: test_harness.py)."""
import os, subprocess, sys

import h5py
import numpy as np
import pytest

import manifold_nb.data as data
from manifold_nb.cache import cached_file, file_lock

# --- cache ------------------------------------------------------------------------------------------------------
# (miss, hit, retrain and interrupted writes of cached_model: tested once, under its code in nbs/core/01_cache.ipynb)

def test_cached_file_rebuilds_a_truncated_entry(tmp_path, capsys):
    built = []
    def make(p):
        built.append(1)
        with h5py.File(p, "w") as f: f["x"] = np.arange(1000)
    def readable(p):
        with h5py.File(p, "r") as f: f["x"][-1]
    p = cached_file("h5", {"n": 1000}, make, suffix=".h5", root=tmp_path, validate=readable)
    assert cached_file("h5", {"n": 1000}, make, suffix=".h5", root=tmp_path, validate=readable) == p and len(built) == 1
    os.truncate(p, 96)
    with pytest.raises(OSError): readable(p)                               # the entry really is unreadable now
    capsys.readouterr()
    assert cached_file("h5", {"n": 1000}, make, suffix=".h5", root=tmp_path, validate=readable) == p
    assert len(built) == 2 and "ignoring unreadable entry" in capsys.readouterr().out
    with h5py.File(p, "r") as f: assert f["x"][()].tolist() == list(range(1000))
    cached_file("h5", {"n": 1000}, make, suffix=".h5", root=tmp_path, validate=readable, retrain=True)
    assert len(built) == 3                                                  # retrain reaches the file cache too


def test_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / "locks" / "entry.lock"
    probe = ("import sys, filelock\n"
             "try:\n    with filelock.FileLock(sys.argv[1], timeout=0.2): print('acquired')\n"
             "except filelock.Timeout: print('timed out')")
    other = lambda: subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout.strip()
    with file_lock(lock):
        assert other() == "timed out"                                       # another process waits while we hold it
    assert other() == "acquired"





def test_data_notebook_quick(run_notebook):
    out, m = run_notebook("data", n=100)
    sizes = {ds: data.split_sizes(ds) for ds in data.DATASETS}      # the counts of the files present, whatever they are
    assert (m["mnist_train"], m["fashion_test"], m["cifar10_train"], m["cifar10_test"]) == \
           (sizes["mnist"].train, sizes["fashion_mnist"].test, sizes["cifar10"].train, sizes["cifar10"].test)
    assert abs(m["mnist"]["mean"]) < 0.2 and sum(m["mnist"]["class_counts"]) == 100
    assert {"figures/mnist_samples.png", "figures/cifar10_samples.png"} <= set(m["figures"])
    assert (out / "data.ipynb").exists()

