"""The collection's training steps, old settings vs new, in one process: ratios of medians of interleaved repeats.

Each model is one the collection trains (the MNIST CNN of `manifold_nb.models.cnn` with its shift augmentation, the
convolutional autoencoder of `manifold_nb.models.autoencoders`, the small convolutional VAE of
`manifold_nb.models.vae`), on MNIST-sized random images (the step's cost does not depend on the pixels), batch 128,
Adam, through `manifold_nb.train.fit`. For each comparison the variants run in turn, `--repeats` times (interleaved,
so a change of the machine's load hits both alike), `--steps` optimiser steps each after a warm-up call; the table
gives each variant's median milliseconds per step and the ratio old/new (> 1: the new setting is faster).

Comparisons:
- `batches`: `fit` through a torch DataLoader over a TensorDataset (per-item indexing and collation; the old path,
  `manifold_nb.train._USE_DATALOADER = True`) vs in-memory batches indexed from the permutation (the default now).
- `channels_last`: model and batches in channels-last memory format vs the default (contiguous NCHW).
- `compile`: `torch.compile(model)` vs eager (steady state after a warm-up; the compile time is printed apart).
- `threads`: wall and CPU time per step at 1 and 2 intra-op threads in this process; from the CPU time, the throughput
  of one process at 2 threads against two independent 1-thread processes side by side on two free cores (CPU time
  does not depend on other users of a shared machine).
- `processes`: the same measured directly: worker processes at 1 thread, at 2 threads, and two 1-thread processes at
  once (their summed steps/s). Meaningful only on an otherwise idle machine: on a loaded one two processes simply
  get a larger share of the cores.

    python benchmarks/collection.py                       # everything (a few minutes on 2 cores)
    python benchmarks/collection.py --only batches --repeats 7
    python benchmarks/collection.py --models cnn --only threads
"""
import argparse, json, os, statistics, subprocess, sys, time

import pandas as pd
import torch
import torch.nn.functional as F

import manifold_nb.train as train
from manifold_nb.models.autoencoders import build_autoencoder, reconstruction_loss
from manifold_nb.models.cnn import MNISTCNN, random_shift
from manifold_nb.models.vae import make_vae, vae_loss

BATCH = 128


def case(name:str, n:int):
    "(build, loss_fn, data) of model `name` on `n` random MNIST-sized images."
    g = torch.Generator().manual_seed(0)
    X = torch.rand(n, 1, 28, 28, generator=g)
    if name == 'cnn':
        y = torch.randint(10, (n,), generator=g)
        return (lambda: MNISTCNN((16, 32, 64), 0.3)), (lambda m, b: F.cross_entropy(m(random_shift(b[0], 2)), b[1])), (X, y)
    if name == 'conv_ae': return (lambda: build_autoencoder('conv', 32)), reconstruction_loss, (X,)
    if name == 'vae': return (lambda: make_vae('small_conv', 2)), vae_loss, (X,)
    raise ValueError(f"model must be one of ['cnn', 'conv_ae', 'vae']; got {name!r}")


class Variant:
    "One setting of a comparison: a model built once (compiled / converted as asked), trained `steps` steps per call."
    def __init__(self, name, model, steps, loader=False, channels_last=False, compiled=False):
        build, loss, self.data = case(model, steps*BATCH)
        torch.manual_seed(0); self.model = build()
        self.compile_s = 0.
        if compiled: self.model = torch.compile(self.model)
        self.name, self.loss, self.steps, self.loader, self.channels_last = name, loss, steps, loader, channels_last
        t0 = time.perf_counter(); self.ms_per_step(); self.warmup_s = time.perf_counter() - t0   # warm-up (compiles)

    def ms_per_step(self) -> float:
        train._USE_DATALOADER = self.loader
        try:
            t0 = time.perf_counter()
            train.fit(self.model, self.data, self.loss, epochs=1, batch_size=BATCH, progress=False, seed=0, channels_last=self.channels_last)
            return 1e3*(time.perf_counter() - t0)/self.steps
        finally: train._USE_DATALOADER = False


def compare(model, what, steps, repeats):
    "Rows (model, comparison, variant, median ms/step, ...) of comparison `what` on `model`: old variant first."
    pairs = dict(batches=[('DataLoader', dict(loader=True)), ('in-memory', {})],
                 channels_last=[('NCHW', {}), ('channels_last', dict(channels_last=True))],
                 compile=[('eager', {}), ('compiled', dict(compiled=True))])[what]
    variants = [Variant(n, model, steps, **kw) for n, kw in pairs]
    times = {v.name: [] for v in variants}
    for _ in range(repeats):
        for v in variants: times[v.name].append(v.ms_per_step())
    old, new = (statistics.median(times[v.name]) for v in variants)
    return dict(model=model, comparison=what, old=variants[0].name, new=variants[1].name, old_ms=old, new_ms=new,
                ratio=old/new, new_warmup_s=variants[1].warmup_s,
                spread=f"{min(times[variants[1].name]):.1f}-{max(times[variants[1].name]):.1f}")


def batching_only(steps, repeats):
    "Milliseconds per batch of 128 MNIST-sized images and labels, DataLoader vs in-memory, without a model (60,000 images)."
    X, y = torch.rand(60000, 1, 28, 28), torch.randint(10, (60000,))
    def ms(loader):
        train._USE_DATALOADER = loader
        try:
            batches = train._batches((X, y), BATCH, 'loader', torch.Generator().manual_seed(0)); t0 = time.perf_counter()
            for i, _ in zip(range(steps*10), batches): pass
            return 1e3*(time.perf_counter() - t0)/(i + 1)
        finally: train._USE_DATALOADER = False
    times = {True: [], False: []}
    for _ in range(repeats):
        for loader in times: times[loader].append(ms(loader))
    old, new = statistics.median(times[True]), statistics.median(times[False])
    return dict(model='(batches only)', comparison='batches', old='DataLoader', new='in-memory', old_ms=old, new_ms=new,
                ratio=old/new, new_warmup_s=0., spread=f"{min(times[False]):.2f}-{max(times[False]):.2f}")


def compare_threads(model, steps, repeats):
    """Wall and CPU milliseconds per step at 1 and at 2 intra-op threads, in this process (interleaved).

    CPU time (all threads of the process) does not depend on how many other processes share the machine, so it gives
    what two 1-thread processes side by side would reach on two free cores: 2 steps per `cpu_ms(1 thread)`, against
    one process at 2 threads: 1 step per `wall_ms(2 threads)`."""
    v = Variant('threads', model, steps)
    def once(n):
        torch.set_num_threads(n); c0 = time.process_time(); wall = v.ms_per_step()
        return wall, 1e3*(time.process_time() - c0)/steps
    res = {1: [], 2: []}
    try:
        for _ in range(repeats):
            for n in res: res[n].append(once(n))
    finally: torch.set_num_threads(1)
    med = {n: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for n, r in res.items()}
    (w1, c1), (w2, c2) = med[1], med[2]
    # on free cores a step takes at least its CPU time spread over the threads that run it
    return [dict(model=model, setting='1 process x 1 thread', wall_ms=w1, cpu_ms=c1, steps_per_s_on_2_free_cores=1e3/c1),
            dict(model=model, setting='1 process x 2 threads', wall_ms=w2, cpu_ms=c2, steps_per_s_on_2_free_cores=2e3/c2),
            dict(model=model, setting='2 processes x 1 thread (from CPU time)', wall_ms=float('nan'), cpu_ms=c1,
                 steps_per_s_on_2_free_cores=2e3/c1)]


def worker(model, steps, threads):
    "Run in a child process: steps per second of `steps` training steps of `model` at `threads` intra-op threads."
    torch.set_num_threads(threads)
    v = Variant('worker', model, steps)
    print(json.dumps(dict(steps_per_s=1e3/v.ms_per_step())))


def spawn(model, steps, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, __file__, '--worker', model, '--steps', str(steps), '--threads', str(threads)],
                            stdout=subprocess.PIPE, text=True, env=env)


def rate(procs):
    "Summed steps per second reported by the worker processes `procs` (waited for)."
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])['steps_per_s'] for p in procs)


def compare_processes(model, steps, repeats):
    "Steps per second: one process at 1 thread, one at 2 threads, two 1-thread processes side by side (interleaved)."
    runs = {'1 process x 1 thread': [], '1 process x 2 threads': [], '2 processes x 1 thread': []}
    for _ in range(repeats):
        runs['1 process x 1 thread'].append(rate([spawn(model, steps, 1)]))
        runs['1 process x 2 threads'].append(rate([spawn(model, steps, 2)]))
        runs['2 processes x 1 thread'].append(rate([spawn(model, steps, 1), spawn(model, steps, 1)]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med['1 process x 1 thread']
    return [dict(model=model, setting=k, steps_per_s=v, vs_1_thread=v/base) for k, v in med.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['cnn', 'conv_ae', 'vae'], choices=['cnn', 'conv_ae', 'vae'])
    p.add_argument('--only', nargs='+', default=['batches', 'channels_last', 'compile', 'threads'],
                   choices=['batches', 'channels_last', 'compile', 'threads', 'processes'])
    p.add_argument('--steps', type=int, default=20, help='optimiser steps per timed call')
    p.add_argument('--repeats', type=int, default=5, help='interleaved repeats per variant (the median is reported)')
    p.add_argument('--threads', type=int, default=1, help='intra-op threads of the in-process comparisons')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker: return worker(a.worker, a.steps, a.threads)
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    print(f'torch {torch.__version__}, {os.cpu_count()} cores, {a.threads} thread(s); load average before: '
          f'{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}')
    rows, procs, cpu = ([batching_only(a.steps, a.repeats)] if 'batches' in a.only else []), [], []
    for m in a.models:
        for what in [w for w in a.only if w not in ('threads', 'processes')]:
            try: rows.append(compare(m, what, a.steps, a.repeats))
            except Exception as e: print(f'{m} {what}: failed ({type(e).__name__}: {str(e)[:200]})'); continue
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f'{v:.2f}'), flush=True)
        if 'threads' in a.only: cpu += compare_threads(m, a.steps, a.repeats)
        if 'processes' in a.only: procs += compare_processes(m, a.steps, a.repeats)
    load1 = os.getloadavg()
    if rows:
        print('\nms per training step (median of interleaved repeats); ratio = old/new (> 1: new is faster)')
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    if cpu:
        print('\nintra-op threads vs processes: wall and CPU ms per step (median); steps/s two free cores would give')
        print(pd.DataFrame(cpu).to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    if procs:
        print('\ntraining throughput, steps/s (median); vs_1_thread = over one process at 1 thread')
        print(pd.DataFrame(procs).to_string(index=False, float_format=lambda v: f'{v:.2f}'))
    print(f'load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}')


if __name__ == '__main__': main()
