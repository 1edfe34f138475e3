"""Decoder Jacobians for the tangent-space test: the document's per-image loop vs the batched torch.func version.

The document computes each 784 x L decoder Jacobian with `torch.autograd.functional.jacobian` (reverse mode, one backward
pass per output pixel) inside a Python loop over images. `manifold_nb.tangent.decoder_jacobians` uses
`vmap(jacfwd(decode))` (L forward-mode passes per image, batched over images). Both run here, in one process, on the same
test images and the same trained model; the script prints the times, their ratio and the difference between the Jacobians.

    python benchmarks/ae_tangent.py                     # fc128 on 1,000 test images (+ conv32 on 100)
    python benchmarks/ae_tangent.py --n-images 200 --conv-images 0
"""
import argparse, time
import torch
from manifold_nb.data import load_fashion_mnist
from manifold_nb.models.autoencoders import build_autoencoder, cached_autoencoder
from manifold_nb.tangent import AE_FULL_TRAINING, ae_train_kwargs, decoder_jacobians, decoder_jacobians_loop, eval_mode

def trained(kind, L, X_train, untrained=False, seed=0):
    "The model nbs/04_ae_tangent.ipynb trains in its full profile (same settings and cache entry; trained here when missing)."
    if untrained: torch.manual_seed(seed); return build_autoencoder(kind, L).eval()
    return cached_autoencoder(kind, L, X_train, **ae_train_kwargs(AE_FULL_TRAINING, kind), seed=seed)

def bench(model, X, name):
    with torch.no_grad(), eval_mode(model): z = model.encode(X)
    decoder_jacobians(model, z[:2])                       # warm-up (torch.func set-up)
    t0 = time.perf_counter(); J_loop = decoder_jacobians_loop(model, z, progress=True); t_loop = time.perf_counter() - t0
    t0 = time.perf_counter(); J_vmap = decoder_jacobians(model, z, progress=True); t_vmap = time.perf_counter() - t0
    diff = (J_loop - J_vmap).abs()
    rel_global = float(diff.max() / J_loop.abs().max())
    rel_per_image = float(((J_loop - J_vmap).flatten(1).norm(dim=1) / J_loop.flatten(1).norm(dim=1)).max())
    return dict(model=name, n=len(X), L=model.latent_dim, t_loop=t_loop, t_vmap=t_vmap, ratio=t_loop / t_vmap,
                max_abs_diff=float(diff.max()), rel_global=rel_global, rel_per_image=rel_per_image)

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, default=1000, help="test images for the fully connected model")
    p.add_argument("--model", default="fc128", choices=["fc16", "fc32", "fc128"])
    p.add_argument("--conv-images", type=int, default=100, help="test images for conv32 (0: skip; its loop costs ~2 s per image)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--untrained", action="store_true", help="use freshly initialised models instead of the cached trained ones")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    X_train, _ = load_fashion_mnist("train"); X_test, _ = load_fashion_mnist("test")
    rows = [bench(trained("fc", int(a.model[2:]), X_train, a.untrained), X_test[:a.n_images], a.model)]
    if a.conv_images > 0: rows.append(bench(trained("conv", 32, X_train, a.untrained), X_test[:a.conv_images], "conv32"))
    print(f"\ndecoder Jacobians, document's per-image loop vs vmap(jacfwd); torch {torch.__version__}, {a.threads} thread(s)")
    print(f"{'model':>7} {'images':>6} {'L':>4} {'loop s':>9} {'vmap s':>8} {'ratio':>7} {'max|dJ|':>9} {'max rel (global)':>17} {'max rel (per image)':>20}")
    for r in rows:
        print(f"{r['model']:>7} {r['n']:>6} {r['L']:>4} {r['t_loop']:9.2f} {r['t_vmap']:8.2f} {r['ratio']:6.1f}x {r['max_abs_diff']:9.2e} {r['rel_global']:17.2e} {r['rel_per_image']:20.2e}")
    ok = all(r["ratio"] >= 10 and r["rel_global"] <= 1e-5 for r in rows)
    print("targets (ratio >= 10x, relative difference <= 1e-5):", "met" if ok else "NOT met")

if __name__ == "__main__": main()
