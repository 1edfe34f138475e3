"""Harness and command line: notebook discovery, typed parameters, the papermill runner, failures, reports, CI checks.

Most runs use the fixture notebooks in tests/fixtures/nbs (`probe` records the values and types it received and
can sleep, exit its kernel or raise), so each run takes seconds."""
import json, os, re, shutil, subprocess, sys, tomllib
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from manifold_nb.harness import (NotebookError, notebook_parameters, notebooks, parse_params, read_record, reproduce,
                                 run_notebook)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "nbs"


def _cli(*args, env=None, timeout=600):
    "Run the command line as a user does (`manifold-nb ARGS`), in a fresh process."
    e = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()})
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    code = "import sys; from manifold_nb.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=ROOT)


def _probe(tmp_path, *args, nbs=FIXTURES, **env):
    "Run the probe fixture through the command line; (result, metrics or None)."
    out = tmp_path / "out"
    r = _cli("run", "probe", "--no-progress", "--out", out, *args, env=dict(MANIFOLD_NB_NBS=nbs, **env))
    m = out / "probe" / "metrics.json"
    return r, (json.loads(m.read_text()) if r.returncode == 0 else None)


def test_console_script_is_the_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"manifold-nb": "manifold_nb.cli:main"}


# --- discovery and names ------------------------------------------------------------------------------------------
def test_registry_lists_the_data_tour_first():
    assert list(notebooks())[0] == "data"
    assert list(notebooks(FIXTURES)) == ["tiny", "probe"]


def test_bad_names_parameters_and_profiles():
    with pytest.raises(ValueError, match=r"notebook must be one of \['data'"): run_notebook("nope")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\].*allowed: \['data_root'"):
        run_notebook("data", {"bogus": 1})
    with pytest.raises(ValueError, match=r"profile must be one of \['quick', 'full'\]"): run_notebook("data", profile="x")
    with pytest.raises(TypeError, match=r"parameter 'n' of notebook 'data' must be int or None; got '1e2' \(str\)"):
        run_notebook("data", {"n": "1e2"})


def test_every_notebook_parameter_is_typed_and_explained():
    for name, path in notebooks().items():
        ps = notebook_parameters(path)
        assert {"profile", "out_dir", "data_root", "seed"} <= set(ps), name
        for p in ps.values():
            assert p.help, f"{name}: parameter {p.name} has no help comment"
            assert p.type_name != "any", f"{name}: parameter {p.name} defaults to None without a type annotation"


# --- issue 11.1: values keep their meaning ------------------------------------------------------------------------
@pytest.mark.parametrize("raw, value", [
    ({"seed": "010"}, {"seed": 10}),                # decimal, not YAML's octal 8
    ({"n": "1e2"}, {"n": 100}),                     # an integral float for an int parameter
    ({"n": "None"}, {"n": None}),                   # None where the default is None
    ({"data_root": "2024"}, {"data_root": "2024"}),  # a path stays a string
    ({"n": "-1e3"}, {"n": -1000}),                  # a negative number is a value (the notebook judges its sign)
    ({"profile": "full"}, {"profile": "full"}),
])
def test_values_converted_to_the_parameter_type(raw, value):
    got = parse_params("data", raw)
    assert got == value and [type(v) for v in got.values()] == [type(v) for v in value.values()]


@pytest.mark.parametrize("raw, message", [
    ({"n": "1:40"}, "parameter 'n': cannot read '1:40' as int or None"),      # not YAML's sexagesimal 100
    ({"n": "1.5"}, "parameter 'n': cannot read '1.5' as int or None"),
    ({"n": "ten"}, "parameter 'n': cannot read 'ten' as int or None"),
    ({"seed": "None"}, "parameter 'seed': None is not allowed (default 0); expected int"),
])
def test_unconvertible_values_are_refused(raw, message):
    with pytest.raises(ValueError) as e: parse_params("data", raw)
    assert message in str(e.value)


def test_cli_values_reach_the_notebook_with_their_types(tmp_path):
    r, m = _probe(tmp_path, "-p", "n", "010", "-p", "data_root", "2024", "-p", "items", "[1, 2]", "-p", "rate", "1e-3",
                  "-p", "flag", "true", "-p", "anything", "None")
    assert r.returncode == 0, r.stderr
    assert (m["n"], m["data_root"], m["items"], m["rate"], m["flag"], m["anything"]) == (10, "2024", [1, 2], 1e-3, True, None)
    assert m["types"] == dict(n="int", rate="float", flag="bool", data_root="str", items="list", anything="NoneType")
    assert m["python"] == sys.executable
    r, m = _probe(tmp_path, "-p", "n", "1e2")
    assert r.returncode == 0 and m["n"] == 100 and m["types"]["n"] == "int"


def test_cli_refusals_come_before_any_kernel(tmp_path):
    for args, message in [(("-p", "n", "1:40"), "parameter 'n': cannot read '1:40' as int or None"),
                          (("-p", "rate", "fast"), "parameter 'rate': cannot read 'fast' as float"),
                          (("-p", "bogus", "1"), "unknown parameter(s) ['bogus'] for notebook 'probe'")]:
        r, _ = _probe(tmp_path, *args)
        assert r.returncode == 2 and f"manifold-nb: error: {message}" in r.stderr, r.stderr
        assert not (tmp_path / "out" / "probe" / "probe.ipynb").exists()     # no kernel was started


def test_cli_negative_value_reaches_the_notebook_check(tmp_path):
    r, _ = _probe(tmp_path, "-p", "n", "-1e3")
    assert "expected" not in r.stderr and r.returncode == 1
    assert "manifold-nb: error: notebook 'probe' failed in cell" in r.stderr and "n must be positive, got -1000" in r.stderr


# --- issue 11.2: timeouts, dead kernels, foreign kernelspecs ------------------------------------------------------
def test_timeout_is_a_one_line_error_naming_cell_and_notebook(tmp_path):
    r, _ = _probe(tmp_path, "-p", "action", "sleep", "--timeout", "1")
    dest = tmp_path / "out" / "probe" / "probe.ipynb"
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.search(r"manifold-nb: error: notebook 'probe' failed in cell (\[\d+\]|#\d+ of the executed notebook) "
                     r"\(if action == \"sleep\".*\): CellTimeoutError", r.stderr), r.stderr
    assert str(dest.resolve()) in r.stderr
    nb = nbformat.read(dest, as_version=4)       # the executed notebook marks the cell that timed out
    assert any(o.get("ename") == "NotebookError" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_dead_kernel_is_a_one_line_error(tmp_path):
    r, _ = _probe(tmp_path, "-p", "action", "exit")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.search(r"manifold-nb: error: notebook 'probe' failed in cell (\[\d+\]|#\d+ of the executed notebook) "
                     r"\(if action == \"exit\".*\): DeadKernelError", r.stderr), r.stderr
    assert "probe.ipynb" in r.stderr and "kernel log:" in r.stderr


def _copy_probe(folder, name, action):
    nb = nbformat.read(FIXTURES / "01_probe.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('action = "ok"', f'action = "{action}"'); assert f'"{action}"' in cell.source
    folder.mkdir(exist_ok=True); nbformat.write(nb, folder / name)


def test_reproduce_runs_every_notebook_and_reports_failures(tmp_path):
    nbs = tmp_path / "nbs"
    for name, action in [("00_slow.ipynb", "sleep"), ("01_fine.ipynb", "ok"), ("02_dies.ipynb", "exit")]: _copy_probe(nbs, name, action)
    out = tmp_path / "report"
    r = _cli("reproduce", "--profile", "quick", "--timeout", "2", "--no-progress", "--out", out, env=dict(MANIFOLD_NB_NBS=nbs))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "2 of 3 notebook(s) failed: ['slow', 'dies']" in r.stderr
    rec = read_record(out)                                                # every notebook ran, in order, and is recorded
    assert [(o.name, o.status) for o in rec.notebooks] == [("slow", "failed"), ("fine", "ok"), ("dies", "failed")]
    assert "CellTimeoutError" in rec.notebooks[0].error and "DeadKernelError" in rec.notebooks[2].error
    assert rec.notebooks[0].notebook == str((out / "slow" / "slow.ipynb").resolve())
    page = (out / "site" / "index.html").read_text()                      # the site's landing page marks the failures
    assert page.count("failed") >= 2 and "CellTimeoutError" in page and "DeadKernelError" in page
    assert str((out / "dies" / "dies.ipynb").resolve()) in page and 'href="01_fine.html"' in page
    assert json.loads((out / "fine" / "metrics.json").read_text())["notebook"] == "probe"


def test_notebooks_run_under_this_python_despite_a_broken_kernelspec(tmp_path):
    spec = tmp_path / "jupyter" / "kernels" / "python3"; spec.mkdir(parents=True)
    fake = tmp_path / "python-without-ipykernel"
    fake.write_text("#!/bin/sh\necho 'No module named ipykernel_launcher' >&2\nexit 1\n"); fake.chmod(0o755)
    (spec / "kernel.json").write_text(json.dumps(dict(argv=[str(fake), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                                      display_name="broken", language="python")))
    env = dict(JUPYTER_PATH=tmp_path / "jupyter")
    found = subprocess.run([sys.executable, "-c", "from jupyter_client.kernelspec import KernelSpecManager as K; "
                            "print(K().get_kernel_spec('python3').argv[0])"], capture_output=True, text=True,
                           env=dict(os.environ, JUPYTER_PATH=str(env["JUPYTER_PATH"])))
    assert found.stdout.strip() == str(fake)          # Jupyter itself would start the broken interpreter
    r, m = _probe(tmp_path, **env)
    assert r.returncode == 0, r.stderr
    assert m["python"] == sys.executable


# --- reports and caching, on the tiny fixture ---------------------------------------------------------------------
def test_fixture_notebook_caches_and_reports(tmp_path):
    out = tmp_path / "out"
    d1 = run_notebook("tiny", nbs=FIXTURES, out=out, progress=False, log_output=False)
    m1 = json.loads((d1.parent / "metrics.json").read_text())
    d2 = run_notebook("tiny", nbs=FIXTURES, out=out, progress=False, log_output=False)
    m2 = json.loads((d2.parent / "metrics.json").read_text())
    assert m1["cache_hit"] is False and m2["cache_hit"] is True
    assert m1["test_accuracy"] == m2["test_accuracy"] and m1["test_accuracy"] > 0.5
    assert "[cache] hit" in d2.read_text()                  # visible in the executed notebook's log
    with pytest.raises(NotebookError, match=r"RuntimeError: fixture asked to fail(.|\n)*executed notebook.*tiny\.ipynb") as e:
        run_notebook("tiny", {"fail": True}, nbs=FIXTURES, out=tmp_path / "bad", progress=False, log_output=False)
    assert e.value.notebook == (tmp_path / "bad" / "tiny" / "tiny.ipynb").resolve()
    rec = reproduce("quick", out=tmp_path / "report", nbs=FIXTURES, progress=False)
    assert [(o.name, o.status, o.error) for o in rec.notebooks] == [(n, "ok", None) for n in notebooks(FIXTURES)]
    assert rec.profile == "quick" and rec.notebooks[0].name == "tiny"
    assert read_record(tmp_path / "report") == rec and not list((tmp_path / "report").rglob("*.html"))   # no nbconvert pages


# --- the command line on the real notebooks ------------------------------------------------------------------------
def test_cli_list_shows_type_default_and_help():
    r = _cli("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "data  (nbs/00_data.ipynb)" in lines
    row = next(l for l in lines if l.startswith("n ") and "images per split" in l)
    assert row.split()[:3] == ["n", "int", "None"]
    for name, path in notebooks().items():              # every parameter's help text is printed
        for p in notebook_parameters(path).values(): assert p.help in r.stdout, (name, p.name)


def test_cli_errors(tmp_path):
    r = _cli("run", "data", "-p", "profile", "nonsense", "--out", tmp_path)
    assert r.returncode == 2 and "profile must be one of ['quick', 'full']" in r.stderr
    r = _cli("run", "data", "--no-progress", "--out", tmp_path, env={"MANIFOLD_NB_DATA": "/nonexistent"})
    assert r.returncode == 1 and "Places searched" in r.stderr and "/nonexistent" in r.stderr and "data.ipynb" in r.stderr


# --- issue 11.7: notebooks are committed without outputs ----------------------------------------------------------
def _unclean(path) -> list[str]:
    "What makes notebook `path` unclean: cells with outputs or execution counts."
    nb = nbformat.read(str(path), as_version=4)
    return [f"{Path(path).name} cell {i}: {what}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for what in (["outputs"] if c.get("outputs") else []) + (["execution count"] if c.get("execution_count") else [])]


ALL_NBS = sorted(p.relative_to(ROOT) for p in [*(ROOT / "nbs").rglob("*.ipynb"), *FIXTURES.glob("*.ipynb")]
                 if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.parametrize("nb", ALL_NBS, ids=str)
def test_notebooks_carry_no_outputs(nb):
    problems = _unclean(ROOT / nb)
    assert not problems, f"{nb} carries outputs: clear them (Jupyter: Clear All Outputs) before committing: {problems}"


def test_the_output_check_fails_on_an_executed_notebook_even_after_nbdev_clean(tmp_path):
    dest = run_notebook("probe", out=tmp_path, nbs=FIXTURES, progress=False, log_output=False)
    copy = tmp_path / "copy.ipynb"; shutil.copy(dest, copy)
    subprocess.run(["nbdev-clean", "--fname", str(copy)], check=True, cwd=ROOT, capture_output=True)
    problems = _unclean(copy)
    assert any("outputs" in p for p in problems), problems      # nbdev-clean alone leaves the outputs in
    nb = nbformat.read(str(copy), as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)   # and keeps the papermill tag


def test_figures_are_inline_whatever_mplbackend_says(tmp_path, monkeypatch):
    "A figure shown by a cell is an image output of the executed notebook, also when MPLBACKEND=Agg (as in CI)."
    import nbformat
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbs = tmp_path / "nbs"; nbs.mkdir()
    params = nbformat.v4.new_code_cell('out_dir = "x"   # output folder', metadata=dict(tags=["parameters"]))
    plot = nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(); ax.plot([0, 1]); plt.show()")
    kernel = dict(kernelspec=dict(name="python3", display_name="python3", language="python"))
    nbformat.write(nbformat.v4.new_notebook(cells=[params, plot], metadata=kernel), str(nbs / "00_plot.ipynb"))
    dest = run_notebook("plot", nbs=nbs, out=tmp_path / "out", progress=False, log_output=False)
    outs = nbformat.read(str(dest), as_version=4).cells[-1].outputs
    assert any("image/png" in o.get("data", {}) for o in outs), outs


# --- issue 15.1: where the time goes ------------------------------------------------------------------------------
def _stages_notebook(folder, name, stages, mib=0):
    "A notebook that sleeps through the timed `stages` ({name: seconds}) and holds `mib` MiB of written memory in the last."
    params = nbformat.v4.new_code_cell('profile = "quick"   # profile\nout_dir = "x"   # output folder', metadata=dict(tags=["parameters"]))
    body = ("import time\nimport numpy as np\nfrom manifold_nb.runs import Run\nrun = Run(out_dir, name='" + name + "')\n"
            + "".join(f"with run.stage({k!r}):\n    time.sleep({v})\n" for k, v in stages.items())
            + f"with run.stage('hold memory'):\n    block = np.ones({mib} * 2**20 // 8); del block\nrun.save()")
    kernel = dict(kernelspec=dict(name="python3", display_name="python3", language="python"))
    folder.mkdir(exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)], metadata=kernel), str(folder / f"{name}.ipynb"))


def test_reproduce_records_and_prints_each_stage_and_peak_memory(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    _stages_notebook(nbs, "00_big", {"load": 0.3, "train": 1.2}, mib=600)
    _stages_notebook(nbs, "01_small", {"analyse": 0.6}, mib=0)
    out = tmp_path / "report"
    ballast = np.ones(2**30 // 8)   # 1 GiB in this process, the kernels' parent: getrusage's ru_maxrss would pass it on to them
    rec = reproduce("quick", out=out, nbs=nbs, progress=False)
    del ballast
    big, small = rec.notebooks
    assert [s["name"] for s in big.stages] == ["load", "train", "hold memory"] and [s["name"] for s in small.stages][0] == "analyse"
    assert 0.3 <= big.stages[0]["seconds"] < 1.3 and 1.2 <= big.stages[1]["seconds"] < 2.2 and 0.6 <= small.stages[0]["seconds"] < 1.6
    assert big.peak_rss_mb >= 600 and small.peak_rss_mb < big.peak_rss_mb - 450   # per kernel, not the largest so far
    assert read_record(out) == rec                                                   # stages and memory are in run.json
    table = pd.read_csv(out / "stages.csv")
    rows = {(r.notebook, r.stage): r for r in table.itertuples()}
    assert rows[("big", "train")].seconds == big.stages[1]["seconds"] and rows[("big", "total")].seconds == big.seconds
    assert rows[("big", "hold memory")].peak_rss_mb - rows[("big", "train")].peak_rss_mb >= 550  # each stage: the peak so far, at its end
    assert abs(rows[("big", "(outside stages)")].seconds + sum(s["seconds"] for s in big.stages) - big.seconds) < 0.01
    assert rows[("(all)", "total")].seconds == round(big.seconds + small.seconds, 2)
    assert rows[("(all)", "total")].peak_rss_mb == big.peak_rss_mb == rows[("big", "total")].peak_rss_mb
    printed = capsys.readouterr().out
    assert "stages of the run" in printed and re.search(r"big\s+train\s+1\.\d", printed) and "(all)" in printed


def _interval_notebook(folder, name, sleep):
    "A notebook that records when its kernel started and ended its one cell (time.time()) in metrics.json."
    params = nbformat.v4.new_code_cell('profile = "quick"   # profile\nout_dir = "x"   # output folder\nthreads: int = None   # torch threads\n'
                                       'workers: int = None   # worker processes', metadata=dict(tags=["parameters"]))
    body = (f"import time\nfrom manifold_nb.runs import Run\nrun = Run(out_dir, name='{name}')\nt0 = time.time()\n"
            f"with run.stage('sleep'): time.sleep({sleep})\nimport numpy, threadpoolctl\n"
            "blas = max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas')\n"
            "run.log(t0=t0, t1=time.time(), threads=threads, workers=workers, blas_threads=blas).save()")
    kernel = dict(kernelspec=dict(name="python3", display_name="python3", language="python"))
    folder.mkdir(exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)], metadata=kernel), str(folder / f"{name}.ipynb"))


@pytest.mark.parametrize("jobs", [1, 2])
def test_reproduce_jobs_runs_notebooks_side_by_side_after_the_data_notebook(tmp_path, jobs):
    nbs = tmp_path / "nbs"
    for name, sleep in [("00_data", 0.5), ("01_a", 2.0), ("02_b", 2.0)]: _interval_notebook(nbs, name, sleep)
    out = tmp_path / "out"
    blas_env = os.environ.get("OPENBLAS_NUM_THREADS")
    rec = reproduce("quick", out=out, nbs=nbs, progress=False, jobs=jobs)
    assert [o.name for o in rec.notebooks] == ["data", "a", "b"] and rec.jobs == jobs   # recorded in the notebooks' order
    t = {o.name: json.loads((out / o.name / "metrics.json").read_text()) for o in rec.notebooks}
    assert t["data"]["t1"] <= min(t["a"]["t0"], t["b"]["t0"])                           # the data notebook first, alone
    overlap = min(t["a"]["t1"], t["b"]["t1"]) - max(t["a"]["t0"], t["b"]["t0"])
    assert (overlap > 1.0) if jobs == 2 else (overlap < 0)                               # side by side only with jobs=2
    assert [t[n]["threads"] for n in ("a", "b")] == ([1, 1] if jobs == 2 else [None, None])  # side by side: one thread each
    assert [t[n]["workers"] for n in ("a", "b")] == ([1, 1] if jobs == 2 else [None, None])  # and no worker processes of their own
    if jobs == 2: assert [t[n]["blas_threads"] for n in ("a", "b")] == [1, 1]               # and one BLAS thread (OpenBLAS ignores torch's)
    assert os.environ.get("OPENBLAS_NUM_THREADS") == blas_env                               # this process's environment is restored
    assert read_record(out).seconds == rec.seconds and rec.seconds < sum(o.seconds for o in rec.notebooks) + 1


def test_reproduce_refuses_bad_jobs(tmp_path):
    with pytest.raises(TypeError, match="jobs must be an int"): reproduce("quick", out=tmp_path, jobs=1.5)
    with pytest.raises(ValueError, match="jobs"): reproduce("quick", out=tmp_path, jobs=0)


def test_longest_first_orders_by_the_previous_record_then_the_typical_seconds():
    from manifold_nb.harness import NotebookOutcome, RunRecord, TYPICAL_SECONDS, longest_first, notebooks
    for p in ("quick", "full"): assert set(TYPICAL_SECONDS[p]) == set(notebooks()) - {"data"}   # every study, no stale name
    names = ["generators", "release_fidelity", "friction_maps", "ae_tangent", "symmetry_discovery"]
    assert longest_first(names, "full") == ["symmetry_discovery", "ae_tangent", "release_fidelity", "generators", "friction_maps"]
    prev = RunRecord("full", "t", None, [NotebookOutcome("friction_maps", "ok", 5000., "x", None), NotebookOutcome("ae_tangent", "failed", 1., "x", "boom")])
    assert longest_first(names, "full", prev)[:3] == ["friction_maps", "symmetry_discovery", "ae_tangent"]  # measured beats typical; a failure's 1 s does not count
    assert longest_first(names, "quick", prev)[0] == "symmetry_discovery"                  # another profile's record is ignored
    assert longest_first(["x", "y"], "full") == ["x", "y"]                                 # unknown: the given order
    # after a cold run the cache holds its models: a notebook is expected to take its time less its "train ..." stages
    cold = RunRecord("full", "t", None, [NotebookOutcome("ae_tangent", "ok", 831., "x", None, [dict(name="train autoencoders", seconds=663.), dict(name="test MSE", seconds=30.)]),
                                         NotebookOutcome("generators", "ok", 453., "x", None, [dict(name="train CNN", seconds=138.), dict(name="train augmented CNN", seconds=156.)]),
                                         NotebookOutcome("release_fidelity", "ok", 608., "x", None, [dict(name="train or load the SVAE", seconds=569.)])])
    assert longest_first(["ae_tangent", "release_fidelity", "generators"], "full", cold) == ["ae_tangent", "generators", "release_fidelity"]   # 168, 159, 39 s
