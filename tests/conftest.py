"""Shared fixtures: run a notebook through the harness (papermill) with the quick profile, once per session."""
import ast, hashlib, json, os
from pathlib import Path

import filelock, pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one intra-op thread each, and in each notebook kernel they start (a second thread per
    # process would oversubscribe the cores; benchmarks/collection.py measures 2-4x slower steps when they are)
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(_v, "1")


def _shared(tmp_path_factory, name):
    "Folder `name` shared by every pytest-xdist worker of this session (the session's own temporary folder without xdist)."
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name   # xdist: base is <session>/popen-gwN
    d.mkdir(exist_ok=True); return d


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook, which reads the marks into the node ids it schedules by
def pytest_collection_modifyitems(items):
    """Under `pytest -n N --dist loadgroup`, the tests of a module that runs a notebook stay on one worker (its fixture runs once).

    Tests of the whole run (`quick_run`: the docs site) stay ungrouped: xdist schedules groups largest first and single tests
    after them in file order, so they come after the notebooks' groups, when every notebook has run, instead of waiting on
    the other worker for the last one (they share one site build, see tests/test_site.py)."""
    for item in items:
        names = set(item.fixturenames)
        if "run_notebook" in names and "quick_run" not in names: item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Train every model afresh in a per-session cache (unless MANIFOLD_NB_TEST_CACHE names one to reuse); xdist workers
    share it, and the cache's file lock makes a worker wanting a model that another is training wait for it and load it."""
    d = os.environ.get("MANIFOLD_NB_TEST_CACHE") or str(_shared(tmp_path_factory, "cache"))
    old = os.environ.get("MANIFOLD_NB_CACHE"); os.environ["MANIFOLD_NB_CACHE"] = d
    yield Path(d)
    if old is None: os.environ.pop("MANIFOLD_NB_CACHE", None)
    else: os.environ["MANIFOLD_NB_CACHE"] = old


@pytest.fixture(scope="session")
def outputs_root(tmp_path_factory):
    "The session's output root (shared by xdist workers): OUT/<name>/ holds the first quick-profile execution of each notebook."
    return _shared(tmp_path_factory, "outputs")


def _defaults(name):
    "The notebook's parameter defaults that are Python literals (name -> value)."
    from manifold_nb.harness import notebook_parameters, notebooks
    out = {}
    for k, v in notebook_parameters(notebooks()[name]).items():
        try: out[k] = ast.literal_eval(getattr(v, "default", v))
        except (ValueError, SyntaxError): pass
    return out


# parameters that change how a notebook runs, not what it computes (tests/test_symmetry.py checks that VAEs trained in
# worker processes equal those trained in the kernel): a run that differs from another only in these is the same run
EXECUTION_ONLY = ("workers",)


def _one_process(name):
    "`workers=1` for a notebook that has the parameter (any profile): under xdist another notebook runs beside it (as harness.SIDE_BY_SIDE)."
    from manifold_nb.harness import notebook_parameters, notebooks
    return {"workers": 1} if "workers" in notebook_parameters(notebooks()[name]) else {}


@pytest.fixture(scope="session")
def run_notebook(outputs_root):
    """run_notebook(name, profile='quick', **params) -> (out_dir, metrics).

    Each (name, profile, params) executes once per session, across xdist workers too (a file lock per notebook; a worker
    asking for a run another is making waits and reuses it); parameters equal to the notebook's defaults do not count.
    The first quick-profile execution of a notebook goes to OUT/<name>/ (what the docs site is built from), others
    to OUT/variants/<key>/<name>/. `run_notebook.first(name)` makes sure OUT/<name>/ holds an execution (any parameters).
    A notebook with a `workers` parameter runs with workers=1 unless asked otherwise, and parameters in `EXECUTION_ONLY`
    do not count either: asking for workers=2 reuses the workers=1 run."""
    from manifold_nb.cache import file_lock
    from manifold_nb.harness import run_notebook as _run
    from manifold_nb.utils import atomic_write
    runs = outputs_root / ".runs"; runs.mkdir(exist_ok=True)

    def _key(name, profile, params):
        defaults = _defaults(name)
        blob = json.dumps([name, profile, {k: v for k, v in params.items()
                                           if k not in EXECUTION_ONLY and (k not in defaults or defaults[k] != v)}],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _execute(name, profile, params, key):
        "The run folder of (name, profile, params): made now unless a worker made it before. Call under the notebook's lock."
        marker, first = runs / f"{key}.run", runs / f"{name}.first"
        if not marker.exists():
            out = outputs_root if profile == "quick" and not first.exists() else outputs_root / "variants" / key
            dest = _run(name, params, profile=profile, out=out, timeout=1200, progress=False, log_output=False)
            atomic_write(marker, lambda p: p.write_text(str(dest.parent)))
            if out == outputs_root: atomic_write(first, lambda p: p.write_text(str(dest.parent)))
        return Path(marker.read_text())

    def _go(name, profile="quick", **params):
        params = {**_one_process(name), **params}
        with file_lock(runs / f"{name}.lock"): d = _execute(name, profile, params, _key(name, profile, params))
        return d, json.loads((d / "metrics.json").read_text())

    def _first(name, wait=True):
        "Make sure OUT/<name>/ holds an execution; False (nothing done) when `wait` is False and another worker holds the lock."
        if (runs / f"{name}.first").exists(): return True   # written once, atomically, never removed: no lock needed to read it
        lock = file_lock(runs / f"{name}.lock", timeout=-1 if wait else 0)
        try: lock.acquire()
        except filelock.Timeout: return False
        try:
            if not (runs / f"{name}.first").exists(): _execute(name, "quick", _one_process(name), _key(name, "quick", {}))
        finally: lock.release()
        return True
    _go.first = _first
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
    pending = list(notebooks())
    while pending:   # the notebooks no other worker is running first; then wait for one that is (and reuse its run)
        pending = [n for n in pending if not run_notebook.first(n, wait=False)]
        if pending: run_notebook.first(pending.pop(0))
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
