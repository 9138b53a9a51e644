"""How well generated digits reproduce scikit-learn's real ones, measured like with like.

The real digits go through the same pipeline the model trains on (the embedded dataset:
8x8 scans bilinearly upsampled to the model's resolution, RGB uint8), and samples and
reals alike are then box-averaged back to 8x8 gray in [0, 1] (64-d features). The 1,797
real digits are split once, by a fixed seed, into a *reference* half and a *baseline*
half. Every figure of the samples is computed against the reference half with as many
samples as reference digits, and printed beside the same figure of the baseline half
(real digits never seen by the reference): the score real data gets.

- `precision` / `recall` (Kynkaanniemi et al., 2019, k = 3): the fraction of samples
  inside the reference digits' k-NN balls / of reference digits inside the samples'.
- `diversity`: per class, the mean pairwise distance between samples of that class
  (the requested class for conditional samples, the classifier's otherwise), divided by
  the same for the baseline's real digits of that class; `diversity_min` is the worst
  class. Near-copies of one digit per class score near 0, real variety 1.
- `digit_accuracy` (conditional samples): the fraction a logistic-regression classifier,
  fit on the reference half's features, assigns to the requested class.
- `classes_present` (classes with at least a quarter of a uniform share, 2.5%) and
  `max_class_fraction`, from the classifier's predictions.

  python -m gan_core.eval.digits samples.npz   # from biggan_jax.sample / pggan_jax.sample
"""
from __future__ import annotations

import functools
import sys

import numpy as np

SPLIT_SEED = 0
K = 3


def to_digit_features(images: np.ndarray) -> np.ndarray:
  """uint8 NHWC images (side a multiple of 8) -> (N, 64) features in [0, 1]."""
  images = np.asarray(images, np.float32).mean(-1)
  n, h, w = images.shape
  if h % 8 or w % 8:
    raise ValueError(f"digit images must have sides that are multiples of 8, got {h}x{w}")
  small = images.reshape(n, 8, h // 8, 8, w // 8).mean((2, 4))
  return (small.reshape(n, 64) / 255.0).astype(np.float64)


@functools.lru_cache(maxsize=4)
def real_split(resolution: int = 32):
  """((reference features, labels), (baseline features, labels)) of the real digits as
  the model sees them at `resolution`."""
  from gan_core.data.sources import digits_source
  source = digits_source(resolution)
  features, labels = to_digit_features(source.images), np.asarray(source.labels)
  order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  half = len(labels) // 2
  a, b = order[:half], order[half:]
  return (features[a], labels[a]), (features[b], labels[b])


@functools.lru_cache(maxsize=4)
def _classifier(resolution: int = 32):
  from sklearn.linear_model import LogisticRegression
  (features, labels), _ = real_split(resolution)
  return LogisticRegression(max_iter=5000).fit(features, labels)


def _pairwise_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
  d = _pairwise_sq_dist(x, x)
  return np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = K) -> tuple[float, float]:
  """Improved precision and recall (k-NN manifolds) of feature sets `fake` against `real`."""
  d = _pairwise_sq_dist(fake, real)
  precision = np.mean(np.any(d <= _knn_radii(real, k)[None, :], axis=1))
  recall = np.mean(np.any(d.T <= _knn_radii(fake, k)[None, :], axis=1))
  return float(precision), float(recall)


def class_spread(features: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """Mean pairwise distance within each of the 10 classes (NaN for fewer than 2 members)."""
  spread = np.full(10, np.nan)
  for c in range(10):
    members = features[classes == c]
    if len(members) >= 2:
      d = np.sqrt(_pairwise_sq_dist(members, members))
      spread[c] = d.sum() / (len(members) * (len(members) - 1))
  return spread


def _scores(features: np.ndarray, classes: np.ndarray | None, reference: np.ndarray,
            baseline_spread: np.ndarray, resolution: int) -> dict[str, float]:
  predicted = _classifier(resolution).predict(features)
  precision, recall = precision_recall(features, reference)
  histogram = np.bincount(predicted, minlength=10) / len(predicted)
  ratio = class_spread(features, predicted if classes is None else classes) / baseline_spread
  ratio = np.nan_to_num(ratio, nan=0.0)  # A class without two samples has no variety.
  scores = {"precision": precision, "recall": recall,
            "diversity": float(np.mean(ratio)), "diversity_min": float(np.min(ratio)),
            "classes_present": float(np.sum(histogram >= 0.025)),
            "max_class_fraction": float(histogram.max())}
  if classes is not None:
    scores["digit_accuracy"] = float(np.mean(predicted == classes))
  return scores


def digit_report(images: np.ndarray, labels: np.ndarray | None = None
                 ) -> dict[str, dict[str, float]]:
  """{'samples': {...}, 'real': {...}}: the measures above for `images` (with `labels`
  when they were generated for requested classes) and for the real baseline half, on
  equal set sizes (the first n samples and n digits of each half, n = min(samples, half))."""
  images = np.asarray(images)
  resolution = images.shape[1]
  (ref, _), (base, base_labels) = real_split(resolution)
  n = min(len(images), len(ref), len(base))
  if n < 2 * K + 10:
    raise ValueError(f"{len(images)} samples are too few for the digit report; draw "
                     f"{len(ref)} (the reference size)")
  ref, base, base_labels = ref[:n], base[:n], base_labels[:n]
  fake = to_digit_features(images[:n])
  classes = None if labels is None else np.asarray(labels)[:n]
  baseline_spread = class_spread(base, base_labels)
  return {"samples": _scores(fake, classes, ref, baseline_spread, resolution),
          "real": _scores(base, None if classes is None else base_labels, ref, baseline_spread,
                          resolution),
          "n": n}


def format_report(report: dict) -> str:
  lines = [f"{'measure':<20}{'samples':>10}{'real':>10}   ({report['n']} of each against "
           f"{report['n']} reference digits)"]
  for name, value in report["samples"].items():
    lines.append(f"{name:<20}{value:>10.3f}{report['real'][name]:>10.3f}")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  usage = "usage: python -m gan_core.eval.digits SAMPLES.npz"
  if len(argv) == 2 and argv[1] in ("-h", "--help"):
    print(usage + "\n\n" + __doc__)
    return
  if len(argv) != 2 or argv[1].startswith("-"):
    sys.exit(usage)
  data = np.load(argv[1])
  labels = data["labels"] if "labels" in data.files else None
  print(format_report(digit_report(data["images"], labels)))


if __name__ == "__main__":
  main(sys.argv)
