"""The embedded default: class-conditional BigGAN on scikit-learn's digits at 32x32.

No download. On a 2-core CPU the 3500 iterations took 10.6 minutes on a slow day of the
VM (the compiled iteration ran 2.5x faster on another day), and on 898 G-EMA samples a
real-digit classifier assigned 97 to 98% to the class they were asked for in two runs
(`python -m gan_core.eval.digits`; README, benchmarks/RESULTS.md).

Departures from the ImageNet recipe, for a short run on 1,797 tiny images:
one D step per G step, batch 16, a short EMA (decay 0.99, from step 1500) so that
G-EMA tracks a generator that is still improving quickly, and a D learning rate 4x
G's (8e-4 / 2e-4, the paper's TTUR ratio) with a 128-d z. Both of the last two keep
variety within a class: with equal learning rates and a 64-d z, G settled on one
prototype per class (recall 0.016 against the real digits' 0.91); with them, recall
0.27 at precision 0.77 (0.88 before), at the same cost per iteration (RESULTS.md
has the sweep). On top, the diversity-sensitive term of DSGAN (Yang et al., 2019;
`diversity_reg` 2, capped at a ratio of 0.3) keeps pairs of one class apart: recall
0.52 at precision 0.72, accuracy 0.98 (a second run: 0.47 / 0.63 / 0.97).
"""
from biggan_jax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.dataset = "digits"
  c.random_flip = False  # A mirrored digit is not a digit.
  c.batch_size = 16
  c.num_train_steps = 3500
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
  c.g_lr = 2e-4
  c.d_lr = 8e-4
  # DSGAN's diversity-sensitive term: pairs of one class must differ (README, RESULTS.md).
  c.diversity_reg = 2.0
  c.diversity_reg_max = 0.3  # About the real digits' same-class ratio (0.19 to 0.31).
  m = c.model
  m.resolution = 32
  m.ch = 8
  m.dim_z = 128
  m.shared_dim = 32
  m.g_attention = (16,)
  m.d_attention = (16,)
  m.num_classes = 10
  return c
