"""How recognisable generated digits are, judged against scikit-learn's real ones.

Generated samples are box-averaged back to 8x8 gray in [0, 1] (the real data's
0..16 range scaled), then:

- class-conditional samples (with `labels`): `digit_accuracy`, the fraction a
  logistic-regression classifier fit on the 1,797 real digits (about 97%
  accurate on held-out real digits) assigns to the class that was asked for;
- any samples: `precision` and `recall` in the sense of Kynkaanniemi et al.
  (2019) with k = 3 nearest neighbours in that 64-d space (precision: the
  fraction of samples inside the real digits' k-NN balls; recall: the fraction
  of real digits inside the samples' balls), and the classifier's predicted
  class histogram over the samples, to show the variety of classes.

  python -m gan_core.eval.digits samples.npz   # from biggan_jax.sample / pggan_jax.sample
"""
from __future__ import annotations

import functools
import sys

import numpy as np


@functools.lru_cache(maxsize=1)
def _classifier():
  from sklearn.datasets import load_digits
  from sklearn.linear_model import LogisticRegression
  digits = load_digits()
  return LogisticRegression(max_iter=5000).fit(digits.data / 16.0, digits.target)


def to_digit_features(images: np.ndarray) -> np.ndarray:
  """uint8 NHWC images (side a multiple of 8) -> (N, 64) features in [0, 1]."""
  images = np.asarray(images, np.float32).mean(-1)
  n, h, w = images.shape
  small = images.reshape(n, 8, h // 8, 8, w // 8).mean((2, 4))
  return small.reshape(n, 64) / 255.0


def digit_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of `images` the real-digit classifier assigns to `labels`."""
  predictions = _classifier().predict(to_digit_features(images))
  return float(np.mean(predictions == np.asarray(labels)))


@functools.lru_cache(maxsize=1)
def _real_features() -> np.ndarray:
  from sklearn.datasets import load_digits
  return (load_digits().data / 16.0).astype(np.float64)


def _pairwise_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
  d = _pairwise_sq_dist(x, x)
  return np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.


def precision_recall(images: np.ndarray, k: int = 3) -> tuple[float, float]:
  """Improved precision and recall (k-NN manifolds) of samples against the real digits."""
  fake = to_digit_features(images).astype(np.float64)
  real = _real_features()
  d = _pairwise_sq_dist(fake, real)
  precision = np.mean(np.any(d <= _knn_radii(real, k)[None, :], axis=1))
  recall = np.mean(np.any(d.T <= _knn_radii(fake, k)[None, :], axis=1))
  return float(precision), float(recall)


def class_histogram(images: np.ndarray) -> np.ndarray:
  """Fraction of samples the real-digit classifier assigns to each of the 10 classes."""
  predictions = _classifier().predict(to_digit_features(images))
  return np.bincount(predictions, minlength=10) / len(predictions)


def digit_report(images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
  """All of the above for one set of samples."""
  precision, recall = precision_recall(images)
  histogram = class_histogram(images)
  report = {"precision": precision, "recall": recall,
            "classes_over_5pct": float(np.sum(histogram >= 0.05)),
            "max_class_fraction": float(histogram.max())}
  if labels is not None:
    report["digit_accuracy"] = digit_accuracy(images, labels)
  return report


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    sys.exit("usage: python -m gan_core.eval.digits SAMPLES.npz")
  data = np.load(argv[1])
  labels = data["labels"] if "labels" in data.files else None
  for name, value in digit_report(data["images"], labels).items():
    print(f"{name}: {value:.4f}")
  print(f"class_histogram: {' '.join(f'{v:.3f}' for v in class_histogram(data['images']))} "
        f"({len(data['images'])} samples)")


if __name__ == "__main__":
  main(sys.argv)
