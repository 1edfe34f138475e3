"""In-notebook tests of the plumbing and model notebooks (nbdev-test), and the README's sync with nbs/index.ipynb.

The analysis notebooks (nbs/NN_*.ipynb) run through papermill in their own test files, which executes their
in-notebook tests too."""
import subprocess
from pathlib import Path

import pytest

from manifold_nb.harness import readme_markdown

ROOT = Path(__file__).resolve().parents[1]
PLUMBING = sorted(p.relative_to(ROOT) for d in ("core", "methods", "models") for p in (ROOT / "nbs" / d).glob("*.ipynb"))


@pytest.mark.parametrize("nb", PLUMBING, ids=str)
def test_notebook_in_notebook_tests(nb):
    r = subprocess.run(["nbdev-test", str(ROOT / nb), "--n-workers", "0"], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_is_rendered_from_index():
    assert (ROOT / "README.md").read_text() == readme_markdown(ROOT / "nbs" / "index.ipynb"), \
        "README.md is stale: run `manifold-nb readme`"
