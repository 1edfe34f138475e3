"""Shared fixtures: run a notebook through the harness (papermill) with the quick profile, once per session."""
import ast, json, os
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
def outputs_root(tmp_path_factory):
    "The session's output root: OUT/<name>/ holds the first quick-profile execution of each notebook (a run folder)."
    return tmp_path_factory.mktemp("outputs")


def _defaults(name):
    "The notebook's parameter defaults that are Python literals (name -> value)."
    from manifold_nb.harness import notebook_parameters, notebooks
    out = {}
    for k, v in notebook_parameters(notebooks()[name]).items():
        try: out[k] = ast.literal_eval(getattr(v, "default", v))
        except (ValueError, SyntaxError): pass
    return out


@pytest.fixture(scope="session")
def run_notebook(outputs_root):
    """run_notebook(name, profile='quick', **params) -> (out_dir, metrics).

    Each (name, profile, params) executes once per session; parameters equal to the notebook's defaults do not count.
    The first quick-profile execution of a notebook goes to OUT/<name>/ (what the docs site is built from), others
    to OUT/variants/<i>/<name>/."""
    from manifold_nb.harness import run_notebook as _run
    done = {}

    def _go(name, profile="quick", **params):
        defaults = _defaults(name)
        key = (name, profile, json.dumps({k: v for k, v in params.items() if k not in defaults or defaults[k] != v},
                                         sort_keys=True, default=str))
        if key not in done:
            first = profile == "quick" and not (outputs_root / name / f"{name}.ipynb").exists()
            out = outputs_root if first else outputs_root / "variants" / str(len(done))
            dest = _run(name, params, profile=profile, out=out, timeout=1200, progress=False, log_output=False)
            done[key] = dest.parent
        return done[key], json.loads((done[key] / "metrics.json").read_text())
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


@pytest.fixture(scope="session")
def quick_run(run_notebook, outputs_root):
    "The session's output root with every notebook of the collection executed (quick profile), reusing earlier executions."
    from manifold_nb.harness import notebooks
    for name in notebooks():
        if not (outputs_root / name / f"{name}.ipynb").exists(): run_notebook(name)
    return outputs_root


@pytest.fixture(scope="session")
def quick_bands():
    """check(name, metrics) -> list of failures: each headline number of notebook `name` (dotted metrics.json paths in
    tests/fixtures/quick_bands.json, with the seed that produced them) must lie in its band; a run with another seed fails."""
    bands = json.loads((Path(__file__).parent / "fixtures" / "quick_bands.json").read_text())

    def check(name, metrics):
        if metrics["params"].get("seed") != bands["seed"]: return [f"seed {metrics['params'].get('seed')} != the bands' seed {bands['seed']}"]
        bad = []
        for key, b in bands["notebooks"][name].items():
            v = metrics
            for part in key.split("."): v = v[part]
            lo, hi = b["band"]
            if not (isinstance(v, (int, float)) and lo <= v <= hi): bad.append(f"{key} = {v} outside [{lo}, {hi}] (recorded {b['value']})")
        return bad
    return check


@pytest.fixture(scope="session")
def document_report():
    """check(run, min_images): the executed notebook of `run` (as `run_notebook` returns it) shows at least `min_images`
    figures inline and a table with the document's numbers beside ours, and every saved figure has alt text."""
    import nbformat
    def check(run, min_images):
        out, m = run
        nb = nbformat.read(out / f"{m['notebook']}.ipynb", 4)
        data = [o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])]
        assert sum("image/png" in d for d in data) >= min_images
        assert any("this run" in d.get("text/html", "") and "document" in d.get("text/html", "") for d in data)
        assert set(m["figure_alt"]) == set(m["figures"])
    return check
