"""Parameter sweeps on Dask: a scheduler and two workers as separate processes on 127.0.0.1, the `echo` fixture
notebook (tests/fixtures/sweep), and one sweep of the real `data` notebook on a LocalCluster."""
import json, os, re, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest

from manifold_nb.cli import main
from manifold_nb.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "sweep"


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    "Address of a Dask scheduler with two single-threaded workers (GPU=1 each), stopped at the end even on failure."
    from distributed import Client
    d = tmp_path_factory.mktemp("dask")
    sf, logf = d / "scheduler.json", open(d / "cluster.log", "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = []
    def start(*args):
        procs.append(subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=d, stdout=logf,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    try:
        start("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(sf))
        t0 = time.time()
        while not sf.exists():
            assert time.time() - t0 < 90 and procs[0].poll() is None, (d / "cluster.log").read_text()
            time.sleep(0.2)
        for i in range(2):
            start("distributed.cli.dask_worker", "--scheduler-file", str(sf), "--host", "127.0.0.1", "--nthreads", "1",
                  "--no-nanny", "--no-dashboard", "--resources", "GPU=1", "--name", f"w{i}", "--local-directory", str(d))
        address = json.loads(sf.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with Client(address, timeout="60s") as c: c.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in procs[::-1]:                                                # workers first, then the scheduler
            try: os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError: pass
            try: p.wait(timeout=10)
            except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait()
        logf.close()


def test_cli_two_points_on_a_running_cluster(scheduler, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MANIFOLD_NB_NBS", str(FIXTURES))
    args = ["sweep", "echo", "-g", "x", "2", "3", "-p", "seed", "5", "--scheduler", scheduler, "--out", str(tmp_path),
            "--no-progress"]
    assert main(args) == 0
    assert "2 point(s) ran, 0 reused, 0 failed" in capsys.readouterr().out
    root = tmp_path / "sweeps" / "echo"
    t = pd.read_csv(root / "sweep.csv")
    assert t.x.tolist() == [2.0, 3.0] and t.seed.tolist() == [5, 5] and t.profile.tolist() == ["quick"] * 2
    assert t.square.tolist() == [4.0, 9.0] and t.shifted.tolist() == [7.0, 8.0] and t["nested.a"].tolist() == [4.0, 6.0]
    assert (t.status == "ok").all() and not t.reused.any() and t.worker.str.startswith("tcp://127.0.0.1:").all()
    assert t.device.tolist() == ["cpu", "cpu"] and t.kernel_pid.nunique() == 2      # a kernel of its own per point
    assert [re.fullmatch(r"x=(\d\.0)-[0-9a-f]{8}", p).group(1) for p in t.point] == ["2.0", "3.0"]
    for p in t.point: assert (root / p / "echo" / "metrics.json").exists() and (root / p / "echo" / "echo.ipynb").exists()
    pq = pd.read_parquet(root / "sweep.parquet")
    assert pq.square.tolist() == [4.0, 9.0] and json.loads(pq["nested.values"][1]) == [3.0, 3.0]
    assert main(args) == 0                                                   # again: nothing runs, and it says so
    assert "nothing to run: all 2 points of sweep 'echo' are done already" in capsys.readouterr().out
    assert pd.read_csv(root / "sweep.csv").reused.all()


def test_failing_point_does_not_stop_the_others(scheduler, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MANIFOLD_NB_NBS", str(FIXTURES))
    args = ["sweep", "echo", "-g", "x", "1", "2", "3", "-p", "fail_at", "2", "--scheduler", scheduler,
            "--out", str(tmp_path), "--no-progress", "--plot", "square", "--x", "x"]
    assert main(args) == 1
    out = capsys.readouterr().out
    t = pd.read_csv(tmp_path / "sweeps" / "echo" / "sweep.csv")
    assert t.status.tolist() == ["ok", "failed", "ok"] and t.square.tolist()[::2] == [1.0, 9.0]
    assert "ValueError: echo fixture fails at x=2.0" in t.error[1] and t.error.isna()[::2].all()
    executed = Path(t.executed[1])
    assert executed.exists() and "echo fixture fails" in executed.read_text()
    assert not (executed.parent / "metrics.json").exists()
    assert re.search(f"failed: {t.point[1]}: .*ValueError: echo fixture fails at x=2.0", out) and str(executed) in out
    assert (tmp_path / "sweeps" / "echo" / "square-vs-x.png").stat().st_size > 0
    assert main(args) == 1                                                   # a rerun retries only the failed point
    assert pd.read_csv(tmp_path / "sweeps" / "echo" / "sweep.csv").reused.tolist() == [True, False, True]


def test_resume_runs_only_the_missing_points(scheduler, tmp_path):
    kw = dict(nbs=FIXTURES, out=tmp_path, scheduler=scheduler, progress=False)
    root = tmp_path / "sweeps" / "echo"
    t1 = sweep("echo", {"x": [1.0, 2.0]}, **kw)
    stamps = [(root / p / "point.json").stat().st_mtime_ns for p in t1.point]
    t2 = sweep("echo", {"x": [1.0, 2.0, 3.0, 4.0]}, **kw)
    assert t2.reused.tolist() == [True, True, False, False] and t2.square.tolist() == [1.0, 4.0, 9.0, 16.0]
    assert [(root / p / "point.json").stat().st_mtime_ns for p in t1.point] == stamps
    (root / t2.point[2] / "echo" / "metrics.json").unlink()                  # a point killed before it finished
    t3 = sweep("echo", {"x": [1.0, 2.0, 3.0, 4.0]}, **kw)
    assert t3.reused.tolist() == [True, True, False, True] and t3.square[2] == 9.0
    t4 = sweep("echo", {"x": [1.0]}, params={"seed": 1}, **kw)               # other parameters: another point
    assert t4.reused.tolist() == [False] and t4.shifted.tolist() == [2.0] and t4.point[0] != t1.point[0]
    t5 = sweep("echo", {"x": [1.0, 2.0]}, force=True, **kw)
    assert not t5.reused.any() and (t5.status == "ok").all()
    assert len(pd.read_parquet(root / "sweep.parquet")) == 2                 # the table lists this call's points


def test_gpu_resources_set_cuda_and_points_have_a_deadline(scheduler, tmp_path):
    kw = dict(nbs=FIXTURES, out=tmp_path, scheduler=scheduler, progress=False)
    t = sweep("echo", {"x": [1.0]}, resources={"GPU": 1}, **kw)
    assert t.device.tolist() == ["cuda"] and t.status.tolist() == ["ok"]
    t0 = time.time()
    t = sweep("echo", {"x": [5.0]}, params={"sleep": 300.0}, timeout=10, **kw)
    assert t.status.tolist() == ["failed"] and "did not finish within 10 s" in t.error[0], t.error[0]
    assert time.time() - t0 < 90


def test_data_notebook_on_a_local_cluster(tmp_path, capsys):
    args = ["sweep", "data", "-g", "n", "50", "100", "--workers", "2", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    t = pd.read_csv(tmp_path / "sweeps" / "data" / "sweep.csv")
    assert t.n.tolist() == [50, 100] and (t.status == "ok").all()
    assert [sum(json.loads(c)) for c in t["mnist.class_counts"]] == [50, 100]   # n images per split, by class
    assert main(args) == 0 and "nothing to run: all 2 points" in capsys.readouterr().out


def test_negative_axis_values_are_values():
    "`-g n -1e3 5` gives the axis n the values -1000 and 5 (argparse alone refuses '-1e3' as an unknown option)."
    from manifold_nb.cli import join_params, parser
    from manifold_nb.harness import notebooks
    from manifold_nb.sweep import cli_grid
    p, _ = parser()
    args = p.parse_args(join_params(["sweep", "data", "-g", "n", "-1e3", "5", "-g", "seed", "-2", "--workers", "1"]))
    assert args.workers == 1
    assert cli_grid(notebooks()["data"], args.axes) == [dict(n=-1000, seed=-2), dict(n=5, seed=-2)]
