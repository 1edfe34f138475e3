"""Benchmark: the document's Step-5 pipeline, once per aff(2) generator, vs manifold_nb.generators for all six at once, on the same MNIST test images.

Every generator of `manifold_nb.transforms.AFF2_BASIS` (x/y shift, rotation, scale, stretch, shear; `--kinds` picks a
subset) goes through both pipelines; the rotation is the document's own case, the other five apply its recipe to
another one-parameter group.

Document (per generator, as its recipe is written): the kornia warp at 0 and eps = 1e-4 (radians, pixels or log-scale)
(float32, batches of 500), forward difference, features extracted with the CNN, forward difference through the CNN,
torch.linalg.pinv (default tolerance) of B and of A. The document lists the feature extraction (A) and the derivative
(dA, "10 batches for each computation") as separate computations, so the baseline spends three CNN passes per generator;
a leaner reading that takes A from the f(g_0 x) pass of the difference (two passes) is timed as well.
This package, all K generators together: exact right derivatives of the same bilinear operator (`lie_derivative`);
the K pixel generators J^B = G_k P from ONE float64 eigendecomposition of the Gram matrix (`lie_generators`); features
and their K right derivatives in ONE stacked pass (`features_jvp` with K tangents: each image's primal once, its K
tangents alongside); the K feature generators from ONE eigendecomposition of AᵀA (`solve_generators`). The per-generator
baseline cannot share any of this. The package run one generator at a time is timed too ("package, per generator").
The one-time torch.compile cost (`--compile`) is measured in a warm-up call and printed separately.

Then a roofline table: FLOPs and bytes moved per stage (counted from the shapes), against what this machine does
(float32 and float64 matrix-multiply GFLOP/s and copy bandwidth GB/s, measured in this script at the same thread
count): each stage's lower bound max(FLOPs/peak, bytes/bandwidth), and the end-to-end ratio those bounds allow. Last, a
measured floor: the stacked pass's convolutions alone, timed at the same shapes, with the other stages as measured (no
pooling or ReLU scheme can make the package faster than that).
Errors are relative Frobenius errors against float64 references of the same operator (Richardson forward differences).

    python benchmarks/generators.py [--n 5000] [--profile full] [--repeats 3] [--threads 1] [--kinds rotation,shift_x,...] [--compile]
"""
import argparse, copy, statistics, time

import torch

from manifold_nb.data import load_mnist
from manifold_nb.generators import fd_feature_derivative, lie_generators, relative_error, solve_generator, solve_generators
from manifold_nb.transforms import AFF2_BASIS, fd_derivative, lie_derivative, transform
from manifold_nb.models.cnn import MNISTCNN, _stacked_ops, features_jvp, mnist_cnn

STAGES = ('dB', 'solve B', 'A, dA', 'solve A')
CLOCKS = dict(cpu=time.process_time, wall=time.perf_counter)
clock = CLOCKS['cpu']   # set by --clock


def document_pipeline(model, X, kind='rotation', eps=1e-4, batch=500):
    "The document's recipe for one generator: stage times and results."
    t = {}; t0 = clock()
    B = X.flatten(1)
    dB = fd_derivative(X, kind, eps=eps, batch_size=batch).flatten(1); t['dB'] = clock() - t0; t0 = clock()
    JB = (torch.linalg.pinv(B) @ dB).T; t['solve B'] = clock() - t0; t0 = clock()
    with torch.no_grad(): A = torch.cat([model.features(X[i:i+batch]) for i in range(0, len(X), batch)])
    dA = fd_feature_derivative(model.features, X, kind, eps=eps, batch_size=batch); t['A, dA'] = clock() - t0
    t0 = clock(); JA = (torch.linalg.pinv(A) @ dA).T; t['solve A'] = clock() - t0
    return dict(JB=JB, JA=JA, dB=dB, dA=dA), t


def lean_document_features(model, X, kind='rotation', eps=1e-4, batch=500):
    "Seconds for the document's A and dA with A taken from the f(g_0 x) pass of the forward difference (two CNN passes)."
    t0 = clock()
    with torch.no_grad():
        for i in range(0, len(X), batch):
            xb = X[i:i+batch]; f0 = model.features(transform(xb, 0., kind))
            (model.features(transform(xb, eps, kind)) - f0)/eps
    return clock() - t0


def package_pipeline(model, X, kinds, compile=False):
    "This package for all `kinds` at once (shared factorisations, one stacked feature pass): stage times and results per kind."
    t = {}; t0 = clock()
    dX = torch.stack([lie_derivative(X, k) for k in kinds]); t['dB'] = clock() - t0; t0 = clock()
    fitsB = lie_generators(X, tuple(kinds)); t['solve B'] = clock() - t0; t0 = clock()
    A, dA = features_jvp(model, X, dX, compile=compile); t['A, dA'] = clock() - t0; t0 = clock()
    fitsA = solve_generators(A, dA); t['solve A'] = clock() - t0
    return {k: dict(JB=fitsB[k].J, JA=fitsA[i].J, dB=dX[i].flatten(1), dA=dA[i]) for i, k in enumerate(kinds)}, t


def _kinds(text):
    kinds = tuple(k.strip() for k in text.split(',') if k.strip())
    bad = [k for k in kinds if k not in AFF2_BASIS]
    if bad or not kinds: raise argparse.ArgumentTypeError(f"kinds must be a comma-separated subset of {AFF2_BASIS}; got {text!r}")
    return kinds


def time_all(model, X, kinds, repeats, compile):
    "Median stage times (summed over the generators) of the document, the package per generator and the package for all at once."
    doc, per, joint, lean = [], [], [], []
    for _ in range(repeats):   # interleaved, so every pipeline sees the same machine load
        r = {k: document_pipeline(model, X, k) for k in kinds}
        doc.append({s: sum(v[1][s] for v in r.values()) for s in STAGES}); doc_res = {k: v[0] for k, v in r.items()}
        lean.append(sum(lean_document_features(model, X, k) for k in kinds))
        r = [package_pipeline(model, X, (k,), compile)[1] for k in kinds]
        per.append({s: sum(v[s] for v in r) for s in STAGES})
        pkg_res, tj = package_pipeline(model, X, kinds, compile); joint.append(tj)
    med = lambda runs: {s: statistics.median(r[s] for r in runs) for s in STAGES}
    return dict(document=med(doc), per_generator=med(per), all_at_once=med(joint)), statistics.median(lean), doc_res, pkg_res


def errors(model, X, kind, doc, pkg, n_check):
    "Relative errors of the two pipelines' dB, dA and J^B against float64 references of the same operator (Richardson differences)."
    ref_dB = fd_derivative(X.double(), kind, eps=1e-5, scheme='richardson').flatten(1)
    m64 = copy.deepcopy(model).double().eval(); nc = min(n_check, len(X))
    ref_dA = fd_feature_derivative(m64.features, X[:nc].double(), kind, eps=1e-8, scheme='richardson')
    ref_JB = solve_generator(X.flatten(1).double(), ref_dB, method='svd').J
    return [('pixel derivative dB', relative_error(doc['dB'], ref_dB), relative_error(pkg['dB'], ref_dB)),
            (f'feature derivative dA ({nc})', relative_error(doc['dA'][:nc], ref_dA), relative_error(pkg['dA'][:nc], ref_dA)),
            ('pixel generator J^B', relative_error(doc['JB'], ref_JB), relative_error(pkg['JB'], ref_JB))]


def machine(repeats=5):
    "What this machine does at the current thread count: matmul GFLOP/s (float32, float64) and copy bandwidth GB/s (medians)."
    def med(f):
        f(); ts = []
        for _ in range(repeats): t0 = clock(); f(); ts.append(clock() - t0)
        return statistics.median(ts)
    out = {}
    for dt in (torch.float32, torch.float64):
        a, b = torch.randn(1024, 1024, dtype=dt), torch.randn(1024, 1024, dtype=dt)
        out[f'gemm_{str(dt)[6:]}'] = 2*1024**3/med(lambda: a @ b)/1e9
    src = torch.randn(32*2**20//4); dst = torch.empty_like(src)          # 32 MB: beyond the caches
    out['copy_GBps'] = 2*src.numel()*4/med(lambda: dst.copy_(src))/1e9   # read + write
    return out


@torch.no_grad()   # as features_jvp: no autograd records
def convolutions_alone(model, n, K, repeats):
    "Median seconds of the convolutions of `features_jvp`'s stacked pass alone (n images, K tangents, its default batches): the measured floor of stage A, dA."
    G = K + 1; bs = max(1, 300//G); ops = _stacked_ops(model); shape, convs = [1, 28, 28], []
    for op in ops:   # each convolution's input, at the shape the stacked pass gives it
        if op[0] == 'conv':
            convs.append((torch.randn(bs*G, *shape).contiguous(memory_format=torch.channels_last), op[1], op[3])); shape[0] = op[1].shape[0]
        elif op[0] == 'pool': shape[1:] = [shape[1]//op[1], shape[2]//op[1]]
    def run():
        t0 = clock()
        for j in range(0, n, bs):   # the last batch at its own size
            for x, w, pad in convs: torch.nn.functional.conv2d(x[:min(bs, n - j)*G], w, None, padding=pad)
        return clock() - t0
    run(); return statistics.median(run() for _ in range(repeats))


def cnn_flops(model):
    "Multiply-adds x 2 of one image's forward pass through the feature extractor (convolutions only)."
    f, hw = 0, 28
    for m in model.body:
        if isinstance(m, torch.nn.Conv2d): f += 2*m.in_channels*m.out_channels*m.kernel_size[0]*m.kernel_size[1]*hw*hw
        if isinstance(m, torch.nn.MaxPool2d): hw //= 2
    return f


def roofline(model, N, d, f, K, tm, peak):
    "Per stage: FLOPs, bytes, lower-bound seconds at this machine's peaks, and measured seconds (document per generator x K, package all at once)."
    c = cnn_flops(model); g32, g64, bw = peak['gemm_float32']*1e9, peak['gemm_float64']*1e9, peak['copy_GBps']*1e9
    svd = lambda n, m: 4*max(n, m)*min(n, m)**2 + 22*min(n, m)**3       # thin SVD with vectors (Golub & Van Loan's R-SVD count)
    eig = lambda m: 9*m**3                                               # symmetric eigendecomposition with vectors
    rows = {  # stage: (document FLOPs, doc bytes, doc peak, package FLOPs, package bytes, package peak)
        'dB': (K*2*N*d*20, K*3*N*d*4, g32, K*N*d*10, K*2*N*d*4, g32),   # two bilinear warps (~20 flops/pixel) vs one upwind stencil
        'solve B': (K*(svd(N, d) + 4*N*d*d), K*2*N*d*4, g32,             # pinv(B) @ dB, in float32, per generator
                    N*d*d + eig(d) + 2*d**3 + K*d*d*10, (N*d + d*d*(K + 2))*8, g64),   # one Gram + eigh, G applied to P per generator
        'A, dA': (K*3*N*c, K*3*N*(d + f)*4, g32, (K + 1)*N*c, (K + 1)*N*(d + f)*4, g32),   # 3K forward passes vs K+1 stacked rows
        'solve A': (K*(svd(N, f) + 4*N*f*f), K*2*N*f*4, g32,
                    N*f*f + eig(f) + 2*K*N*f*f + 4*K*f**3, (N*f*(K + 1) + f*f*(K + 2))*8, g64),
    }
    out = []
    for s, (fd, bd, pd, fp, bp, pp) in rows.items():
        out.append(dict(stage=s, doc_gflop=fd/1e9, doc_mb=bd/1e6, doc_bound=max(fd/pd, bd/bw), doc_measured=tm['document'][s],
                        pkg_gflop=fp/1e9, pkg_mb=bp/1e6, pkg_bound=max(fp/pp, bp/bw), pkg_measured=tm['all_at_once'][s]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=5000, help='test images 0..n-1 (document: 5000)')
    p.add_argument('--profile', default='full', help='CNN profile (cached by the notebooks; quick = smoke test; "untrained": random weights, no cache)')
    p.add_argument('--repeats', type=int, default=3, help='timed runs per pipeline (the median is reported)')
    p.add_argument('--n-check', type=int, default=1000, help='images for the float64 feature-derivative reference')
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    p.add_argument('--kinds', type=_kinds, default=AFF2_BASIS, help=f'comma-separated generators (default: all of {",".join(AFF2_BASIS)})')
    p.add_argument('--compile', action='store_true', help='run features_jvp through torch.compile (needs a C++ compiler)')
    p.add_argument('--clock', choices=tuple(CLOCKS), default='cpu',
                   help="cpu: CPU seconds of this process (time.process_time; robust to other users' load on a shared machine, "
                        "= wall time on an idle machine at 1 thread); wall: wall-clock seconds")
    a = p.parse_args()
    global clock; clock = CLOCKS[a.clock]
    if a.threads: torch.set_num_threads(a.threads)
    X, _ = load_mnist('test', n=a.n)
    if a.profile == 'untrained': torch.manual_seed(0); model = MNISTCNN().eval()
    else: model = mnist_cnn(a.profile, progress=False)
    t_compile = 0.
    if a.compile:
        t0 = clock(); features_jvp(model, X[:8], torch.stack([lie_derivative(X[:8], k) for k in a.kinds]), compile=True)
        t_compile = clock() - t0
    peak = machine()
    tm, t_lean, doc, pkg = time_all(model, X, a.kinds, a.repeats, a.compile)
    K = len(a.kinds)

    print(f"# generators benchmark: {a.n} MNIST test images, {K} generators ({','.join(a.kinds)}), CNN profile {a.profile}, "
          f"threads {torch.get_num_threads()}, {a.clock} seconds, median of {a.repeats} interleaved runs"
          + (f"; one-time torch.compile warm-up {t_compile:.1f} s (not included)" if a.compile else ''))
    print(f"{'stage (all generators)':<26}{'document (s)':>14}{'package per generator (s)':>27}{'package all at once (s)':>25}{'speed-up':>10}")
    tot = {n: sum(v.values()) for n, v in tm.items()}
    for s in STAGES:
        d, q, j = tm['document'][s], tm['per_generator'][s], tm['all_at_once'][s]
        print(f"{s:<26}{d:>14.2f}{q:>27.2f}{j:>25.2f}{d/j:>9.1f}x")
    d, q, j = tot['document'], tot['per_generator'], tot['all_at_once']
    lean = d - tm['document']['A, dA'] + t_lean
    print(f"{'end to end':<26}{d:>14.2f}{q:>27.2f}{j:>25.2f}{d/j:>9.1f}x")
    print(f"end to end, document vs package all at once: {d/j:.1f}x (target >= 5x at 1 thread: {'met' if d/j >= 5 else 'NOT met'}); "
          f"vs the lean document reading ({lean:.2f} s, two CNN passes): {lean/j:.1f}x; package per generator: {d/q:.1f}x")
    print()
    print(f"# roofline: this machine at {torch.get_num_threads()} thread(s): matmul {peak['gemm_float32']:.1f} GFLOP/s float32, "
          f"{peak['gemm_float64']:.1f} GFLOP/s float64, copy {peak['copy_GBps']:.1f} GB/s (medians, measured now, {a.clock} clock)")
    print(f"{'stage':<10}{'doc GFLOP':>11}{'doc MB':>9}{'doc bound s':>13}{'doc meas. s':>13}{'pkg GFLOP':>11}{'pkg MB':>9}{'pkg bound s':>13}{'pkg meas. s':>13}")
    rl = roofline(model, a.n, 784, 490, K, tm, peak)
    for r in rl:
        print(f"{r['stage']:<10}{r['doc_gflop']:>11.1f}{r['doc_mb']:>9.0f}{r['doc_bound']:>13.2f}{r['doc_measured']:>13.2f}"
              f"{r['pkg_gflop']:>11.1f}{r['pkg_mb']:>9.0f}{r['pkg_bound']:>13.2f}{r['pkg_measured']:>13.2f}")
    db, pb = sum(r['doc_bound'] for r in rl), sum(r['pkg_bound'] for r in rl)
    print(f"bounds: document {db:.2f} s, package {pb:.2f} s; measured document / package bound = {d/pb:.1f}x is the most this package "
          f"could gain here at peak; measured share of its bound: document {db/d:.0%}, package {pb/j:.0%}")
    tc = convolutions_alone(model, a.n, K, a.repeats); floor = j - tm['all_at_once']['A, dA'] + tc
    print(f"measured floor: the stacked pass's convolutions alone take {tc:.2f} s of its {tm['all_at_once']['A, dA']:.2f} s (A, dA); with the "
          f"other stages as measured, the package cannot go below {floor:.2f} s, i.e. at most {d/floor:.1f}x against the document here")
    print()
    print(f"{'generator':<10}{'error vs float64 reference':<32}{'document':>12}{'package':>12}{'ratio':>10}")
    for kind in a.kinds:
        for name, e_d, e_p in errors(model, X, kind, doc[kind], pkg[kind], a.n_check): print(f"{kind:<10}{name:<32}{e_d:>12.2e}{e_p:>12.2e}{e_d/e_p:>9.0f}x")
    print()
    for kind in a.kinds:
        print(f"{kind:<10}‖J^B‖_F: document pipeline {doc[kind]['JB'].norm():.2f}, package {pkg[kind]['JB'].norm():.2f};  "
              f"‖J^A‖_F: document pipeline {doc[kind]['JA'].norm():.2f}, package {pkg[kind]['JA'].norm():.2f}")
    print("document table (rotation): ‖J^B‖_F 400.50, ‖J^A‖_F 137.14")


if __name__ == '__main__':
    main()
