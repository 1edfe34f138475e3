"""Benchmark: `manifold_nb.conduit.fl_conduit` vs `torch.linalg.eigh` on 2,560,000 4x4 Gram matrices.

2,560,000 = 10,000 images x 256 patches, the size of document 003's full run. The matrices are per-patch Gram
matrices `MᵀM` of random 48x4 sphere-row matrices with anisotropic column scales (like the SVAE's), in float32 as
the seed script builds them. Both solvers run in this process on the same tensor, alternately, `--repeats` times;
the table reports the median time of each. Errors are measured against float64 `torch.linalg.eigvalsh`, relative to
max|lambda| per matrix.

    python benchmarks/conduit.py [--n 2560000] [--repeats 3] [--threads N] [--chunk 16384]
"""
import argparse, resource, statistics, time

import torch

from manifold_nb.conduit import fl_conduit


def gram_batch(n, seed=0, block=262_144):
    "n float32 Gram matrices of sphere-row 48x4 matrices (built in blocks to bound memory)."
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([2.5, 1.2, 0.8, 0.5])
    out = torch.empty(n, 4, 4)
    for i in range(0, n, block):
        k = min(block, n - i)
        M = torch.nn.functional.normalize(torch.randn(k, 48, 4, generator=g) * scales, dim=-1)
        out[i:i + k] = M.mT @ M
    return out


def rss_gib():
    "Peak resident memory of this process so far (GiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2_560_000, help="number of 4x4 matrices")
    ap.add_argument("--repeats", type=int, default=3, help="alternating timing repeats (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--chunk", type=int, default=16384, help="fl_conduit chunk_size")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    G = gram_batch(a.n)
    print(f"{a.n:,} float32 4x4 Gram matrices ({G.numel() * 4 / 2**20:.0f} MiB), torch {torch.__version__}, "
          f"{threads} thread(s), chunk {a.chunk}")
    t_eigh, t_fl = [], []
    for r in range(a.repeats):
        t = time.perf_counter(); L_eigh, V_eigh = torch.linalg.eigh(G); t_eigh.append(time.perf_counter() - t)
        del V_eigh
        t = time.perf_counter(); pk = fl_conduit(G, chunk_size=a.chunk); t_fl.append(time.perf_counter() - t)
        print(f"  repeat {r}: eigh {t_eigh[-1]:.2f} s, fl_conduit {t_fl[-1]:.2f} s", flush=True)
    mem = rss_gib()
    ref = torch.linalg.eigvalsh(G.double())
    scale = ref.abs().amax(-1)
    err_fl = ((pk.eigenvalues.double() - ref).abs().amax(-1) / scale)
    err_eigh = ((L_eigh.double() - ref).abs().amax(-1) / scale)
    V = pk.eigenvectors.double()
    res = ((G.double() @ V - V * pk.eigenvalues.double()[:, None, :]).norm(dim=-2).amax(-1) / scale)
    orth = pk.refinement_residual.double()
    me, mf = statistics.median(t_eigh), statistics.median(t_fl)
    rows = [("torch.linalg.eigh (float32)", me, 1.0, err_eigh),
            ("fl_conduit (+friction/settle)", mf, mf / me, err_fl)]
    print(f"\n{'solver':<32s} {'median s':>9s} {'ratio':>6s} {'max rel err':>12s} {'p99.9 rel err':>14s} {'Mmat/s':>7s}")
    for name, t, ratio, e in rows:
        print(f"{name:<32s} {t:9.2f} {ratio:6.2f} {e.max().item():12.2e} {e.quantile(0.999).item() if len(e) < 16_000_000 else float('nan'):14.2e} {a.n / t / 1e6:7.2f}")
    print(f"\nfl_conduit: eigenvector residual max {res.max().item():.2e}, ||VᵀV-I|| max {orth.max().item():.2e}, "
          f"matrices finished by the Jacobi safeguard {int(pk.refined.sum()):,} ({pk.refined.double().mean().item():.2e})")
    print(f"telemetry: mean friction per ascending mode {[round(v, 2) for v in pk.friction.mean(0).tolist()]}, "
          f"mean settle {[round(v, 3) for v in pk.settle.mean(0).tolist()]}")
    print(f"all times: eigh {[round(t, 2) for t in t_eigh]}, fl_conduit {[round(t, 2) for t in t_fl]}")
    print(f"peak RSS of the process: {mem:.2f} GiB (input {G.numel() * 4 / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
