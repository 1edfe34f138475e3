"""Two benchmarks of nbs/04_ae_tangent.ipynb: decoder Jacobians (document's loop vs torch.func) and autoencoder training steps.

The document computes each 784 x L decoder Jacobian with `torch.autograd.functional.jacobian` (reverse mode, one backward
pass per output pixel) inside a Python loop over images. `manifold_nb.tangent.decoder_jacobians` uses
`vmap(jacfwd(decode))` (L forward-mode passes per image, batched over images). Both run here, in one process, on the same
test images and the same trained model; the script prints the times, their ratio and the difference between the Jacobians.

    python benchmarks/ae_tangent.py                     # fc128 on 1,000 test images (+ conv32 on 100)
    python benchmarks/ae_tangent.py --n-images 200 --conv-images 0

Convolutional decoders (`--explicit`): `vmap(jacfwd)` against `conv_decoder_jacobians` (explicit forward mode, what
`decoder_jacobians` uses for them), conv16/32/128 on the same codes, interleaved, median of `--reps` (CPU time of this
thread), with the relative difference between the two.

    python benchmarks/ae_tangent.py --explicit --n-images 200

Training (`--training`): training steps per second of the six autoencoders at batch 128 and one thread, old settings
(`F.elu`, PyTorch's expm1-based ELU) against new (`manifold_nb.models.autoencoders.elu`, the same function via exp),
and optionally `channels_last` and `torch.compile`, all in one process, interleaved step by step (median of `--reps`
steps of each, CPU time of this thread, so that other load on the machine inflates both sides alike). It also prints
the full profile's training time these rates imply on two unloaded cores (two worker processes, longest first).

    python benchmarks/ae_tangent.py --training                 # six models, old vs new ELU
    python benchmarks/ae_tangent.py --training --channels-last --compile

Measured 2026-11-30 on the 2-core AMD EPYC (AVX512) machine, torch 2.14.1, 1 thread, load average ~19 (shared), median
of 12 interleaved steps (thread CPU time): steps/s old -> new ELU -> new ELU + channels_last (what training now uses for
the convolutional models): conv16 3.78 -> 5.16 -> 5.88 (1.56x), conv32 3.23 -> 4.31 -> 5.04 (1.56x), conv128 3.01 ->
3.80 -> 3.94 (1.31x); fc16 93 -> 93, fc32 86 -> 89, fc128 73 -> 71 (1.0x: the fully connected models spend little in
ELU). Implied full-profile training: 1867 s in one process before, 690 s in two worker processes after (2.7x).
torch.compile (conv16, same process): 1.20x per step after a first step of 62 s (compilation), not used.
A larger batch (256) gave 0.82-1.14x samples/s: not used.
"""
import argparse, statistics, time
import torch
import torch.nn.functional as F
from manifold_nb.models import autoencoders
from manifold_nb.data import load_fashion_mnist
from manifold_nb.models.autoencoders import build_autoencoder, cached_autoencoder
from manifold_nb.tangent import AE_FULL_TRAINING, ae_train_kwargs, decoder_jacobians, decoder_jacobians_loop, eval_mode

def trained(kind, L, X_train, untrained=False, seed=0):
    "The model nbs/04_ae_tangent.ipynb trains in its full profile (same settings and cache entry; trained here when missing)."
    if untrained: torch.manual_seed(seed); return build_autoencoder(kind, L).eval()
    return cached_autoencoder(kind, L, X_train, **ae_train_kwargs(AE_FULL_TRAINING, kind), seed=seed)

def bench(model, X, name):
    with torch.no_grad(), eval_mode(model): z = model.encode(X)
    decoder_jacobians(model, z[:2], method="jacfwd")      # warm-up (torch.func set-up)
    t0 = time.perf_counter(); J_loop = decoder_jacobians_loop(model, z, progress=True); t_loop = time.perf_counter() - t0
    t0 = time.perf_counter(); J_vmap = decoder_jacobians(model, z, method="jacfwd", progress=True); t_vmap = time.perf_counter() - t0
    diff = (J_loop - J_vmap).abs()
    rel_global = float(diff.max() / J_loop.abs().max())
    rel_per_image = float(((J_loop - J_vmap).flatten(1).norm(dim=1) / J_loop.flatten(1).norm(dim=1)).max())
    return dict(model=name, n=len(X), L=model.latent_dim, t_loop=t_loop, t_vmap=t_vmap, ratio=t_loop / t_vmap,
                max_abs_diff=float(diff.max()), rel_global=rel_global, rel_per_image=rel_per_image)

def bench_explicit(X_train, X, reps=3, untrained=False):
    "Median seconds of vmap(jacfwd) and of explicit forward mode on the codes of `X`, per convolutional model; rows of a table."
    rows = []
    for L in (16, 32, 128):
        model = trained("conv", L, X_train, untrained)
        with torch.no_grad(), eval_mode(model): z = model.encode(X)
        run = {m: (lambda m=m: decoder_jacobians(model, z, method=m)) for m in ("jacfwd", "explicit")}
        for f in run.values(): f()                                                    # warm-up
        t = {m: [] for m in run}
        for _ in range(reps):
            for m, f in run.items(): t0 = time.thread_time(); f(); t[m].append(time.thread_time() - t0)
        J_e = run["explicit"](); J_f = run["jacfwd"]()
        med = {m: statistics.median(v) for m, v in t.items()}
        rows.append(dict(model=f"conv{L}", n=len(X), jacfwd=med["jacfwd"], explicit=med["explicit"], ratio=med["jacfwd"] / med["explicit"],
                         rel=float((J_e - J_f).abs().max() / J_f.abs().max())))
        print(f"  conv{L}: jacfwd {med['jacfwd']:.2f} s, explicit {med['explicit']:.2f} s", flush=True)
    return rows

def training_step(name, batch_size=128, old_elu=False, channels_last=False, compile=False, bf16=False, seed=0):
    "One Adam step of the MSE reconstruction loss on a fixed random batch, as a closure (old_elu: the models use F.elu; bf16: bfloat16 autocast, as `fit(autocast=...)`)."
    kind, L = name.rstrip("0123456789"), int(name.lstrip("convfc"))
    torch.manual_seed(seed); m = build_autoencoder(kind, L).train(); X = torch.rand(batch_size, 1, 28, 28)
    if channels_last: m = m.to(memory_format=torch.channels_last); X = X.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), 1e-3); fwd = torch.compile(m) if compile else m
    def step():
        if old_elu: autoencoders.elu = F.elu
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16): loss = F.mse_loss(fwd(X), X)
            opt.zero_grad(); loss.backward(); opt.step()
        finally: autoencoders.elu = NEW_ELU
    return step

NEW_ELU = autoencoders.elu

def bench_training(names, reps=15, channels_last=False, compile=False, bf16=False):
    "Median steps/s (thread CPU time) of each variant, interleaved step by step; returns {name: {variant: steps/s}}."
    out = {}
    for name in names:
        variants = dict(old=dict(old_elu=True), new=dict())
        if channels_last: variants["new + channels_last"] = dict(channels_last=True)
        if compile: variants["new + torch.compile"] = dict(compile=True)
        if bf16: variants["new + channels_last + bf16"] = dict(channels_last=True, bf16=True)
        steps = {k: training_step(name, **v) for k, v in variants.items()}
        for k, s in steps.items():
            t0 = time.perf_counter(); s(); s(); print(f"  {name} {k}: first two steps {time.perf_counter() - t0:.1f} s", flush=True)
        times = {k: [] for k in steps}
        for _ in range(reps):
            for k, s in steps.items(): t0 = time.thread_time(); s(); times[k].append(time.thread_time() - t0)
        out[name] = {k: 1 / statistics.median(v) for k, v in times.items()}
    return out

def full_profile_training_seconds(rates, processes=2):
    "Training seconds of the full profile (AE_FULL_TRAINING) at `rates` (steps/s), models spread over `processes` workers longest first."
    cost = {n: AE_FULL_TRAINING[f"{'fc' if n.startswith('fc') else 'conv'}_epochs"] * (AE_FULL_TRAINING[f"n_train_{'fc' if n.startswith('fc') else 'conv'}"] // AE_FULL_TRAINING["batch_size"]) / r
            for n, r in rates.items()}
    loads = [0.] * processes
    for n in sorted(cost, key=cost.get, reverse=True): loads[loads.index(min(loads))] += cost[n]
    return sum(cost.values()), max(loads)

def main_training(a):
    names = [f"{k}{L}" for k in ("conv", "fc") for L in (16, 32, 128)]
    res = bench_training(names, a.reps, a.channels_last, a.compile, a.bf16)
    print(f"\nautoencoder training steps/s at batch 128, {a.threads} thread(s), torch {torch.__version__} (median of {a.reps} interleaved steps, thread CPU time)")
    cols = list(next(iter(res.values())))
    print(f"{'model':>8} " + " ".join(f"{c:>22}" for c in cols) + "   ratios to old")
    for n, r in res.items():
        print(f"{n:>8} " + " ".join(f"{r[c]:22.2f}" for c in cols) + "   " + " ".join(f"{c}: {r[c] / r['old']:.2f}x" for c in cols[1:]))
    for c in cols:
        total, span = full_profile_training_seconds({n: r[c] for n, r in res.items()})
        print(f"full-profile training at these rates ({c}): {total:.0f} s in one process, {span:.0f} s in two worker processes")

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=1000, help="test images for the fully connected model")
    p.add_argument("--model", default="fc128", choices=["fc16", "fc32", "fc128"])
    p.add_argument("--conv-images", type=int, default=100, help="test images for conv32 (0: skip; its loop costs ~2 s per image)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--untrained", action="store_true", help="use freshly initialised models instead of the cached trained ones")
    p.add_argument("--explicit", action="store_true", help="conv decoders: vmap(jacfwd) against explicit forward mode (`--n-images` test images)")
    p.add_argument("--training", action="store_true", help="benchmark training steps (old vs new ELU) instead of decoder Jacobians")
    p.add_argument("--reps", type=int, default=None, help="--training: interleaved steps per variant (default 15); --explicit: timed runs (default 3)")
    p.add_argument("--channels-last", action="store_true", help="--training: also time channels_last models")
    p.add_argument("--compile", action="store_true", help="--training: also time torch.compile (its first steps include compilation)")
    p.add_argument("--bf16", action="store_true", help="--training: also time channels_last with bfloat16 autocast (the full profile's conv AEs where the CPU has native bf16)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.training: a.reps = a.reps or 15; return main_training(a)
    X_train, _ = load_fashion_mnist("train"); X_test, _ = load_fashion_mnist("test")
    if a.explicit:
        rows = bench_explicit(X_train, X_test[:a.n_images], a.reps or 3, a.untrained)
        print(f"\nconvolutional decoder Jacobians, vmap(jacfwd) vs explicit forward mode; torch {torch.__version__}, {a.threads} thread(s), thread CPU time")
        print(f"{'model':>7} {'images':>6} {'jacfwd s':>9} {'explicit s':>11} {'ratio':>7} {'max rel diff':>13}")
        for r in rows: print(f"{r['model']:>7} {r['n']:>6} {r['jacfwd']:9.2f} {r['explicit']:11.2f} {r['ratio']:6.1f}x {r['rel']:13.2e}")
        return
    rows = [bench(trained("fc", int(a.model[2:]), X_train, a.untrained), X_test[:a.n_images], a.model)]
    if a.conv_images > 0: rows.append(bench(trained("conv", 32, X_train, a.untrained), X_test[:a.conv_images], "conv32"))
    print(f"\ndecoder Jacobians, document's per-image loop vs vmap(jacfwd); torch {torch.__version__}, {a.threads} thread(s)")
    print(f"{'model':>7} {'images':>6} {'L':>4} {'loop s':>9} {'vmap s':>8} {'ratio':>7} {'max|dJ|':>9} {'max rel (global)':>17} {'max rel (per image)':>20}")
    for r in rows:
        print(f"{r['model']:>7} {r['n']:>6} {r['L']:>4} {r['t_loop']:9.2f} {r['t_vmap']:8.2f} {r['ratio']:6.1f}x {r['max_abs_diff']:9.2e} {r['rel_global']:17.2e} {r['rel_per_image']:20.2e}")
    ok = all(r["ratio"] >= 10 and r["rel_global"] <= 1e-5 for r in rows)
    print("targets (ratio >= 10x, relative difference <= 1e-5):", "met" if ok else "NOT met")

if __name__ == "__main__": main()
