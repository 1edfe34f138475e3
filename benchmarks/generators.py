"""Benchmark: the document's Step-5 pipeline vs manifold_nb.generators on the same 5,000 MNIST test images.

Document: kornia rotate at 0 and eps = 1e-4 rad (float32, batches of 500), forward difference, features extracted with
the CNN, forward difference through the CNN, torch.linalg.pinv (default tolerance).
This package: exact right derivative of the same bilinear operator (`lie_derivative`), features and their right
derivative in one pass (`features_jvp`), float64 Gram-eigendecomposition minimum-norm solver (same tolerance).
Errors are relative Frobenius errors against float64 references of the same operator (Richardson forward differences).

    python benchmarks/generators.py [--n 5000] [--profile full] [--repeats 2] [--threads 1]
"""
import argparse, time

import torch

from manifold_nb.data import load_mnist
from manifold_nb.generators import (fd_derivative, fd_feature_derivative, lie_derivative, relative_error, solve_generator)
from manifold_nb.models.cnn import features_jvp, mnist_cnn


def document_pipeline(model, X, eps=1e-4, batch=500):
    t = {}; t0 = time.perf_counter()
    B = X.flatten(1)
    dB = fd_derivative(X, 'rotation', eps=eps, batch_size=batch).flatten(1); t['dB'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JB = (torch.linalg.pinv(B) @ dB).T; t['solve B'] = time.perf_counter() - t0; t0 = time.perf_counter()
    with torch.no_grad(): A = torch.cat([model.features(X[i:i+batch]) for i in range(0, len(X), batch)])
    dA = fd_feature_derivative(model.features, X, 'rotation', eps=eps, batch_size=batch); t['A, dA'] = time.perf_counter() - t0
    t0 = time.perf_counter(); JA = (torch.linalg.pinv(A) @ dA).T; t['solve A'] = time.perf_counter() - t0
    return dict(JB=JB, JA=JA, dB=dB, dA=dA), t


def package_pipeline(model, X, batch=500):
    t = {}; t0 = time.perf_counter()
    B = X.flatten(1)
    dX = lie_derivative(X); dB = dX.flatten(1); t['dB'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JB, _ = solve_generator(B, dB); t['solve B'] = time.perf_counter() - t0; t0 = time.perf_counter()
    A, dA = features_jvp(model, X, dX, batch_size=batch); t['A, dA'] = time.perf_counter() - t0; t0 = time.perf_counter()
    JA, _ = solve_generator(A, dA); t['solve A'] = time.perf_counter() - t0
    return dict(JB=JB, JA=JA, dB=dB, dA=dA), t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=5000, help='test images 0..n-1 (document: 5000)')
    p.add_argument('--profile', default='full', help='CNN profile (cached by the notebooks; quick = smoke test)')
    p.add_argument('--repeats', type=int, default=2, help='timed runs per pipeline (the minimum is reported)')
    p.add_argument('--n-check', type=int, default=1000, help='images for the float64 feature-derivative reference')
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    X, _ = load_mnist('test', n=a.n)
    model = mnist_cnn(a.profile, progress=False)
    runs = {'document': [], 'package': []}
    for _ in range(a.repeats):   # alternate, so both see the same machine load
        runs['document'].append(document_pipeline(model, X)); runs['package'].append(package_pipeline(model, X))
    t_doc = {k: min(r[1][k] for r in runs['document']) for k in runs['document'][0][1]}
    t_pkg = {k: min(r[1][k] for r in runs['package']) for k in runs['package'][0][1]}
    doc, pkg = runs['document'][-1][0], runs['package'][-1][0]

    # references: float64 kornia operator and float64 network, Richardson forward differences
    ref_dB = fd_derivative(X.double(), 'rotation', eps=1e-5, scheme='richardson').flatten(1)
    m64 = mnist_cnn(a.profile, progress=False).double().eval(); nc = min(a.n_check, a.n)
    ref_dA = fd_feature_derivative(m64.features, X[:nc].double(), 'rotation', eps=1e-8, scheme='richardson')
    ref_JB, _ = solve_generator(X.flatten(1).double(), ref_dB, method='svd')

    print(f"# generators benchmark: {a.n} MNIST test images, CNN profile {a.profile}, threads {torch.get_num_threads()}, "
          f"min of {a.repeats} runs")
    print(f"{'stage':<26}{'document (s)':>14}{'package (s)':>14}{'speed-up':>10}")
    for k in t_doc: print(f"{k:<26}{t_doc[k]:>14.2f}{t_pkg[k]:>14.2f}{t_doc[k]/t_pkg[k]:>9.1f}x")
    tb_d, tb_p = t_doc['dB'] + t_doc['solve B'], t_pkg['dB'] + t_pkg['solve B']
    ta_d, ta_p = t_doc['A, dA'] + t_doc['solve A'], t_pkg['A, dA'] + t_pkg['solve A']
    print(f"{'J^B total':<26}{tb_d:>14.2f}{tb_p:>14.2f}{tb_d/tb_p:>9.1f}x")
    print(f"{'J^A total':<26}{ta_d:>14.2f}{ta_p:>14.2f}{ta_d/ta_p:>9.1f}x")
    print(f"{'J^B + J^A end to end':<26}{tb_d + ta_d:>14.2f}{tb_p + ta_p:>14.2f}{(tb_d + ta_d)/(tb_p + ta_p):>9.1f}x")
    print()
    print(f"{'error vs float64 reference':<32}{'document':>12}{'package':>12}{'ratio':>10}")
    rows = [('pixel derivative dB', relative_error(doc['dB'], ref_dB), relative_error(pkg['dB'], ref_dB)),
            (f'feature derivative dA ({nc})', relative_error(doc['dA'][:nc], ref_dA), relative_error(pkg['dA'][:nc], ref_dA)),
            ('pixel generator J^B', relative_error(doc['JB'], ref_JB), relative_error(pkg['JB'], ref_JB))]
    for name, e_d, e_p in rows: print(f"{name:<32}{e_d:>12.2e}{e_p:>12.2e}{e_d/e_p:>9.0f}x")
    print()
    print(f"‖J^B‖_F: document pipeline {doc['JB'].norm():.2f}, package {pkg['JB'].norm():.2f}, document table 400.50")
    print(f"‖J^A‖_F: document pipeline {doc['JA'].norm():.2f}, package {pkg['JA'].norm():.2f}, document table 137.14")


if __name__ == '__main__':
    main()
