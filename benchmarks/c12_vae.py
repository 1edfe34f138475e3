"""The C12 (polar-grid) VAE against the small convolutional VAE on the symmetry study's data, in one process.

Data: rotated MNIST digits 1 and 2 from the `manifold_nb.data` store (400 training and 200 held-out test originals per
digit, each at 0°, 30°, ..., 330°, kornia bilinear). For each seed and training setting the script trains (or loads from
the model cache) both VAEs with `train_vae` and prints the held-out negative ELBO side by side, the C12 VAE's relative
latent error at every 30° step (`latent_rotation_error`: mean with 95 % interval over the held-out originals), and the
training throughput of both in steps/s, measured interleaved on the same batches.

    python benchmarks/c12_vae.py                          # latent 2, 8 epochs at lr 3e-3 (the notebook's full profile, both VAEs), seeds 0 and 1
    python benchmarks/c12_vae.py --latent 16 --seeds 0 --epochs 3
"""
import argparse, time, warnings
import pandas as pd
import torch
from manifold_nb.data import rotated_mnist_file, load_rotated_mnist
from manifold_nb.models.vae import train_vae, make_vae, vae_loss, negative_elbo, latent_rotation_error
from manifold_nb.utils import set_seed

@torch.no_grad()
def held_out_neg_elbo(v, X, batch_size=1000):
    "Mean negative ELBO (nats per image) of the images X, one posterior sample each (seeded)."
    set_seed(0); v.eval(); tot = 0.
    for i in range(0, len(X), batch_size):
        x = X[i:i+batch_size]; logits, mu, logvar = v(x); tot += negative_elbo(logits, x, mu, logvar).item()*len(x)
    return tot/len(X)

def steps_per_s(arch, latent, X, n=15, batch_size=128):
    "Adam steps per second of a fresh VAE on the first n batches of X."
    set_seed(0); v = make_vae(arch, latent).train(); opt = torch.optim.Adam(v.parameters(), 1e-3)
    t = time.perf_counter()
    for i in range(n):
        loss = vae_loss(v, (X[batch_size*i:batch_size*(i+1)],)); opt.zero_grad(); loss.backward(); opt.step()
    return n/(time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--latent', type=int, default=2); p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--lr', type=float, default=3e-3); p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--threads', type=int, default=2); p.add_argument('--repeats', type=int, default=2)
    a = p.parse_args(); torch.set_num_threads(a.threads); warnings.filterwarnings('ignore', module='e2cnn')
    tr = load_rotated_mnist(rotated_mnist_file([1, 2], 'train', 400, 30, 0)).images
    te = load_rotated_mnist(rotated_mnist_file([1, 2], 'test', 200, 30, 0)).images
    Xtr, Xte = tr.flatten(0, 1), te.flatten(0, 1)
    rates = {k: [] for k in ('small_conv', 'c12')}
    for _ in range(a.repeats):
        for k in rates: rates[k].append(steps_per_s(k, a.latent, Xtr))
    print(pd.DataFrame(rates).describe().loc[['mean', 'min', 'max']].round(1).to_string(), '\n(steps/s, batch 128,',
          f'{a.threads} threads)\n')
    rows = []
    for seed in a.seeds:
        for arch in ('small_conv', 'c12'):
            v = train_vae(arch, a.latent, Xtr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=seed)
            rows.append(dict(arch=arch, seed=seed, neg_elbo=held_out_neg_elbo(v, Xte)))
            if arch == 'c12':
                e = latent_rotation_error(v, te, range(0, 360, 30))
                print(f'seed {seed}: C12 relative latent error per angle (mean [95 % interval], {e.n_images} held-out originals)')
                print(pd.DataFrame(dict(mean=e.mean, low=e.low, high=e.high), index=pd.Index(e.angles, name='angle')).T.round(4).to_string(), '\n')
    print(pd.DataFrame(rows).pivot(index='seed', columns='arch', values='neg_elbo').round(2).to_string())

if __name__ == '__main__': main()
