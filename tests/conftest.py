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
