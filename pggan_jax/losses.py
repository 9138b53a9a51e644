"""WGAN-GP with the drift penalty and optional AC-GAN label terms (the official
`D_wgangp_acgan` / `G_wgan_acgan`).

Per example, D's loss is

    D(fake) - D(real) + lambda / gamma^2 * (||grad_x D(x_mix)||_2 - gamma)^2
      + epsilon * D(real)^2 [+ cond_weight * (CE(real logits) + CE(fake logits))]

with x_mix = real + (fake - real) * u, u ~ U(0, 1) per example, and the
gradient of the *sum* of D's scores over the mixed batch (so the minibatch
stddev layer's cross-example terms are included, as officially). G's loss is
-D(fake) [+ cond_weight * CE(fake logits)]. Both are averaged over the batch.
Reals and fakes go through D in separate passes, so minibatch-stddev groups
never mix them.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

# d_apply(images) -> (scores [N], label logits [N, K] or None)
DApply = Callable[[jax.Array], tuple[jax.Array, jax.Array | None]]


def _label_penalty(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def gradient_penalty(d_apply: DApply, reals: jax.Array, fakes: jax.Array, key: jax.Array,
                     target: float) -> tuple[jax.Array, jax.Array]:
  """((||grad D(x_mix)|| - target)^2 per example, the gradient norms)."""
  u = jax.random.uniform(key, (reals.shape[0], 1, 1, 1), jnp.float32)
  mixed = reals + (fakes - reals) * u
  grads = jax.grad(lambda x: jnp.sum(d_apply(x)[0]))(mixed)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=(1, 2, 3)))
  return jnp.square(norms - target), norms


def d_wgan_gp(d_apply: DApply, reals: jax.Array, fakes: jax.Array, labels: jax.Array | None,
              key: jax.Array, wgan_lambda: float = 10.0, wgan_target: float = 1.0,
              wgan_epsilon: float = 0.001, cond_weight: float = 1.0
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  real_scores, real_logits = d_apply(reals)
  fake_scores, fake_logits = d_apply(fakes)
  penalty, norms = gradient_penalty(d_apply, reals, fakes, key, wgan_target)
  drift = jnp.square(real_scores)
  loss = (fake_scores - real_scores + penalty * (wgan_lambda / wgan_target ** 2)
          + drift * wgan_epsilon)
  metrics = {"d_real": jnp.mean(real_scores), "d_fake": jnp.mean(fake_scores),
             "gradient_penalty": jnp.mean(penalty), "gradient_norm": jnp.mean(norms),
             "drift_penalty": jnp.mean(drift),
             "real_scores": real_scores}  # Per example, for ADA's r_t; the caller pops it.
  if real_logits is not None:
    label_loss = _label_penalty(real_logits, labels) + _label_penalty(fake_logits, labels)
    loss = loss + label_loss * cond_weight
    metrics["d_label_loss"] = jnp.mean(label_loss)
  return jnp.mean(loss), metrics


def g_wgan(d_apply: DApply, fakes: jax.Array, labels: jax.Array | None,
           cond_weight: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  scores, logits = d_apply(fakes)
  loss = -scores
  metrics = {}
  if logits is not None:
    label_loss = _label_penalty(logits, labels)
    loss = loss + label_loss * cond_weight
    metrics["g_label_loss"] = jnp.mean(label_loss)
  return jnp.mean(loss), metrics
