"""In-notebook tests of the plumbing and model notebooks (nbdev-test), and the README's sync with nbs/index.ipynb.

The analysis notebooks (nbs/NN_*.ipynb) run through papermill in their own test files, which executes their
in-notebook tests too."""
import subprocess
from pathlib import Path

import pytest

from manifold_nb.harness import readme_markdown

ROOT = Path(__file__).resolve().parents[1]
PLUMBING = ("core", "methods", "models")   # one nbdev-test process per folder: torch and the package load once per folder,
                                           # not once per notebook (161 s -> about 80 s of test time); its output names a failing notebook


@pytest.mark.parametrize("folder", PLUMBING)
def test_notebook_in_notebook_tests(folder):
    nbs = sorted((ROOT / "nbs" / folder).glob("*.ipynb"))
    assert nbs, f"no notebooks in nbs/{folder}"
    r = subprocess.run(["nbdev-test", str(ROOT / "nbs" / folder), "--n-workers", "0", "--timing"], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(f"{p.name}:" in r.stdout + r.stderr for p in nbs), r.stdout + r.stderr   # --timing lists every notebook it ran


def test_readme_is_rendered_from_index():
    assert (ROOT / "README.md").read_text() == readme_markdown(ROOT / "nbs" / "index.ipynb"), \
        "README.md is stale: run `manifold-nb readme`"
