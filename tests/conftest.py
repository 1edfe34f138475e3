"""Shared fixtures: run a notebook through the harness (papermill) with the quick profile."""
import json, os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    "Train every model afresh in a per-session cache (unless MANIFOLD_NB_TEST_CACHE names one to reuse)."
    d = os.environ.get("MANIFOLD_NB_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    old = os.environ.get("MANIFOLD_NB_CACHE"); os.environ["MANIFOLD_NB_CACHE"] = d
    yield Path(d)
    if old is None: os.environ.pop("MANIFOLD_NB_CACHE", None)
    else: os.environ["MANIFOLD_NB_CACHE"] = old


@pytest.fixture(scope="session")
def run_notebook(tmp_path_factory):
    "run_notebook(name, **params) -> (out_dir, metrics): executes nbs/NN_name.ipynb with profile='quick'."
    from manifold_nb.harness import run_notebook as _run
    root = tmp_path_factory.mktemp("outputs")

    def _go(name, profile="quick", **params):
        dest = _run(name, params, profile=profile, out=root, timeout=1200, progress=False, log_output=False)
        return dest.parent, json.loads((dest.parent / "metrics.json").read_text())
    return _go


@pytest.fixture(scope="session")
def full_cifar10(tmp_path_factory):
    """A complete-size CIFAR-10 root (data_batch_1..5 and test_batch, 10,000 rows each) built from the local batches.

    Rows are the local training and test rows in file order, repeated cyclically. Yields (root, X, y): X (60000, 3072)
    uint8 and y (60000,) the rows written, the five training batches first, then the test batch."""
    import pickle
    import numpy as np
    from manifold_nb.data import find_root
    src = find_root("cifar10") / "cifar-10-batches-py"
    batches = []
    for p in sorted(src.glob("data_batch_*")) + [src / "test_batch"]:
        with open(p, "rb") as f: batches.append(pickle.load(f, encoding="latin1"))
    X_all = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    y_all = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    root = tmp_path_factory.mktemp("full_cifar10"); d = root / "cifar-10-batches-py"; d.mkdir()
    rows = np.arange(60_000) % len(y_all)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        r = rows[i * 10_000:(i + 1) * 10_000]
        with open(d / name, "wb") as f:
            pickle.dump({"data": X_all[r], "labels": y_all[r].tolist(), "batch_label": name}, f, protocol=2)
    yield root, X_all[rows], y_all[rows]
