"""Benchmark: the document's Step-5 pipeline vs manifold_nb.generators on the same 5,000 MNIST test images, per aff(2) generator.

Every generator of `manifold_nb.transforms.AFF2_BASIS` (x/y shift, rotation, scale, stretch, shear; `--kinds` picks a
subset) goes through both pipelines; the rotation is the document's own case, the other five apply its recipe to
another one-parameter group.

Document: the kornia warp at 0 and eps = 1e-4 (radians, pixels or log-scale) (float32, batches of 500), forward difference, features extracted with
the CNN, forward difference through the CNN, torch.linalg.pinv (default tolerance). The document's summary lists the
feature extraction (A) and the derivative (dA, "10 batches for each computation") as separate computations, so the
baseline spends three CNN passes on them; a leaner reading that takes A from the f(g_0 x) pass of the difference (two
passes) is timed as well and printed below the table.
This package: exact right derivative of the same bilinear operator (`lie_derivative`); J^B = G P from the float64
eigendecomposition of the Gram matrix (`lie_generator`, the same minimum-norm solution without the X^T dX product);
features and their right derivative in one packed pass (`features_jvp`), eagerly and with `compile=True`; J^A by the
float64 Gram-eigendecomposition minimum-norm solver (`solve_generator`, same tolerance). The one-time torch.compile
cost is measured in a warm-up call and printed separately; it is not in the per-stage times.
Errors are relative Frobenius errors against float64 references of the same operator (Richardson forward differences).

    python benchmarks/generators.py [--n 5000] [--profile full] [--repeats 2] [--threads 1] [--kinds rotation,shift_x,...]
"""
import argparse, copy, time

import torch

from manifold_nb.data import load_mnist
from manifold_nb.generators import fd_feature_derivative, lie_generator, relative_error, solve_generator
from manifold_nb.transforms import AFF2_BASIS, fd_derivative, lie_derivative, transform
from manifold_nb.models.cnn import features_jvp, mnist_cnn


def document_pipeline(model, X, kind='rotation', eps=1e-4, batch=500):
    t = {}; t0 = time.perf_counter()
    B = X.flatten(1)
    dB = fd_derivative(X, kind, eps=eps, batch_size=batch).flatten(1); t['dB'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JB = (torch.linalg.pinv(B) @ dB).T; t['solve B'] = time.perf_counter() - t0; t0 = time.perf_counter()
    with torch.no_grad(): A = torch.cat([model.features(X[i:i+batch]) for i in range(0, len(X), batch)])
    dA = fd_feature_derivative(model.features, X, kind, eps=eps, batch_size=batch); t['A, dA'] = time.perf_counter() - t0
    t0 = time.perf_counter(); JA = (torch.linalg.pinv(A) @ dA).T; t['solve A'] = time.perf_counter() - t0
    return dict(JB=JB, JA=JA, dB=dB, dA=dA), t


def lean_document_features(model, X, kind='rotation', eps=1e-4, batch=500):
    "The document's A and dA with A taken from the f(g_0 x) pass of the forward difference (two CNN passes)."
    t0 = time.perf_counter(); A, dA = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch):
            xb = X[i:i+batch]; f0 = model.features(transform(xb, 0., kind)); A.append(f0)
            dA.append((model.features(transform(xb, eps, kind)) - f0)/eps)
    return torch.cat(A), torch.cat(dA), time.perf_counter() - t0


def package_pipeline(model, X, kind='rotation', compile=False):
    t = {}; t0 = time.perf_counter()
    dX = lie_derivative(X, kind); dB = dX.flatten(1); t['dB'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JB = lie_generator(X, kind).J; t['solve B'] = time.perf_counter() - t0; t0 = time.perf_counter()
    A, dA = features_jvp(model, X, dX, compile=compile); t['A, dA'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JA = solve_generator(A, dA).J; t['solve A'] = time.perf_counter() - t0
    return dict(JB=JB, JA=JA, dB=dB, dA=dA), t


def _kinds(text):
    kinds = tuple(k.strip() for k in text.split(',') if k.strip())
    bad = [k for k in kinds if k not in AFF2_BASIS]
    if bad or not kinds: raise argparse.ArgumentTypeError(f"kinds must be a comma-separated subset of {AFF2_BASIS}; got {text!r}")
    return kinds


def time_kind(model, X, kind, repeats):
    "Minimum stage times of the three pipelines (and of the lean document reading) for one generator, and the last results."
    names = ('document', 'eager', 'compiled')
    runs = {k: [] for k in names}; t_lean = []
    for _ in range(repeats):   # alternate, so all see the same machine load
        runs['document'].append(document_pipeline(model, X, kind)); t_lean.append(lean_document_features(model, X, kind)[2])
        runs['eager'].append(package_pipeline(model, X, kind, compile=False)); runs['compiled'].append(package_pipeline(model, X, kind, compile=True))
    tm = {n: {k: min(r[1][k] for r in runs[n]) for k in runs[n][0][1]} for n in names}
    tm = {n: dict(v, **{'J^B total': v['dB'] + v['solve B'], 'J^A total': v['A, dA'] + v['solve A'],
                        'J^B + J^A end to end': sum(v.values())}) for n, v in tm.items()}
    for k in ('JB', 'JA', 'dA'):   # eager and compiled paths compute the same numbers
        assert relative_error(runs['eager'][-1][0][k], runs['compiled'][-1][0][k]) < 1e-5, (kind, k)
    return tm, min(t_lean), runs['document'][-1][0], runs['compiled'][-1][0]


def errors(model, X, kind, doc, pkg, n_check):
    "Relative errors of the two pipelines' dB, dA and J^B against float64 references of the same operator (Richardson differences)."
    ref_dB = fd_derivative(X.double(), kind, eps=1e-5, scheme='richardson').flatten(1)
    m64 = copy.deepcopy(model).double().eval(); nc = min(n_check, len(X))
    ref_dA = fd_feature_derivative(m64.features, X[:nc].double(), kind, eps=1e-8, scheme='richardson')
    ref_JB = solve_generator(X.flatten(1).double(), ref_dB, method='svd').J
    return [('pixel derivative dB', relative_error(doc['dB'], ref_dB), relative_error(pkg['dB'], ref_dB)),
            (f'feature derivative dA ({nc})', relative_error(doc['dA'][:nc], ref_dA), relative_error(pkg['dA'][:nc], ref_dA)),
            ('pixel generator J^B', relative_error(doc['JB'], ref_JB), relative_error(pkg['JB'], ref_JB))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=5000, help='test images 0..n-1 (document: 5000)')
    p.add_argument('--profile', default='full', help='CNN profile (cached by the notebooks; quick = smoke test)')
    p.add_argument('--repeats', type=int, default=2, help='timed runs per pipeline (the minimum is reported)')
    p.add_argument('--n-check', type=int, default=1000, help='images for the float64 feature-derivative reference')
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    p.add_argument('--kinds', type=_kinds, default=AFF2_BASIS, help=f'comma-separated generators (default: all of {",".join(AFF2_BASIS)})')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    X, _ = load_mnist('test', n=a.n)
    model = mnist_cnn(a.profile, progress=False)
    t0 = time.perf_counter(); features_jvp(model, X[:8], lie_derivative(X[:8]), compile=True)   # compile (or load) once
    t_compile = time.perf_counter() - t0
    res = {k: time_kind(model, X, k, a.repeats) for k in a.kinds}

    print(f"# generators benchmark: {a.n} MNIST test images, CNN profile {a.profile}, threads {torch.get_num_threads()}, "
          f"min of {a.repeats} runs; one-time torch.compile warm-up {t_compile:.1f} s (not included below)")
    print(f"{'generator':<10}{'stage':<24}{'document (s)':>14}{'eager (s)':>11}{'compiled (s)':>14}{'speed-up eager':>16}{'speed-up compiled':>19}")
    total = {n: 0. for n in ('document', 'eager', 'compiled', 'lean')}
    for kind, (tm, t_lean, _, _) in res.items():
        for k in tm['document']:
            d, e, c = tm['document'][k], tm['eager'][k], tm['compiled'][k]
            print(f"{kind:<10}{k:<24}{d:>14.2f}{e:>11.2f}{c:>14.2f}{d/e:>15.1f}x{d/c:>18.1f}x")
        for n in ('document', 'eager', 'compiled'): total[n] += tm[n]['J^B + J^A end to end']
        total['lean'] += tm['document']['J^B + J^A end to end'] - tm['document']['A, dA'] + t_lean
    print()
    print(f"{'generator':<10}{'end to end: document (s)':>26}{'lean document (s)':>19}{'compiled (s)':>14}{'speed-up':>10}{'vs lean':>9}")
    for kind, (tm, t_lean, _, _) in res.items():
        d, c = tm['document']['J^B + J^A end to end'], tm['compiled']['J^B + J^A end to end']; l = d - tm['document']['A, dA'] + t_lean
        print(f"{kind:<10}{d:>26.2f}{l:>19.2f}{c:>14.2f}{d/c:>9.1f}x{l/c:>8.1f}x")
    d, l, c = total['document'], total['lean'], total['compiled']
    print(f"{'all':<10}{d:>26.2f}{l:>19.2f}{c:>14.2f}{d/c:>9.1f}x{l/c:>8.1f}x   "
          f"(target >= 5x end to end at 1 thread: {'met' if d/c >= 5 else 'NOT met'}; eager {d/total['eager']:.1f}x)")
    print("(lean document: A taken from the f(g_0 x) pass of the forward difference, two CNN passes instead of three)")
    print()
    print(f"{'generator':<10}{'error vs float64 reference':<32}{'document':>12}{'package':>12}{'ratio':>10}")
    for kind, (_, _, doc, pkg) in res.items():
        for name, e_d, e_p in errors(model, X, kind, doc, pkg, a.n_check): print(f"{kind:<10}{name:<32}{e_d:>12.2e}{e_p:>12.2e}{e_d/e_p:>9.0f}x")
    print()
    for kind, (_, _, doc, pkg) in res.items():
        print(f"{kind:<10}‖J^B‖_F: document pipeline {doc['JB'].norm():.2f}, package {pkg['JB'].norm():.2f};  "
              f"‖J^A‖_F: document pipeline {doc['JA'].norm():.2f}, package {pkg['JA'].norm():.2f}")
    print("document table (rotation): ‖J^B‖_F 400.50, ‖J^A‖_F 137.14")


if __name__ == '__main__':
    main()
