"""The embedded default: class-conditional BigGAN on scikit-learn's digits at 32x32.

No download. On a 2-core CPU the 4000 iterations took 8.2 minutes (2026-12-03), and on 898
G-EMA samples (`python -m gan_core.eval.digits`) they scored precision 0.71 and recall 0.66
against the held-out real digits' 0.90 / 0.91, with 97% assigned to the requested class;
three training seeds, each sampled with three sampling seeds, drew precision 0.705 to 0.781
and recall 0.635 to 0.697 (README, benchmarks/RESULTS.md).

Departures from the ImageNet recipe, for a short run on 1,797 tiny images:
one D step per G step, batch 16, a short EMA (decay 0.99, from step 1500) so that
G-EMA tracks a generator that is still improving quickly, learning rates of 4e-4 (G)
and 1.6e-3 (D: 4x G's, the paper's TTUR ratio; half these learned the classes later),
and a 128-d z. With equal learning rates and a 64-d z, G settled on one prototype per
class (recall 0.016). On top, the diversity-sensitive term of DSGAN (Yang et al., 2019;
`diversity_reg` 4, capped at a same-class ratio of 0.2) keeps pairs of one class apart;
without it recall stays near 0.27 (RESULTS.md has the sweeps).
"""
from biggan_jax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.dataset = "digits"
  c.random_flip = False  # A mirrored digit is not a digit.
  c.batch_size = 16
  c.num_train_steps = 4000
  c.num_d_steps = 1
  c.ema_decay = 0.99
  c.ema_start = 1500
  c.checkpoint_every_steps = 500
  c.log_every_steps = 100
  c.sample_every_steps = 500
  c.num_grid_samples = 100
  # Off here: the Inception network on 2 CPU cores would cost more than the training
  # (about 20 images/s). Enable with --config.eval_every_steps=1000
  # --config.eval.inception_weights=pt_inception-2015-12-05-6726825d.pth.
  c.eval_every_steps = 0
  c.eval.num_samples = 2000
  c.g_lr = 4e-4
  c.d_lr = 1.6e-3
  # DSGAN's diversity-sensitive term: pairs of one class must differ (README, RESULTS.md).
  c.diversity_reg = 4.0
  # The low end of the real digits' same-class ratio (0.19 to 0.31): G is not paid for
  # more variety than the least varied class has (0.3 cost precision: RESULTS.md).
  c.diversity_reg_max = 0.2
  m = c.model
  m.resolution = 32
  m.ch = 8
  m.dim_z = 128
  m.shared_dim = 32
  m.g_attention = (16,)
  m.d_attention = (16,)
  m.num_classes = 10
  return c
