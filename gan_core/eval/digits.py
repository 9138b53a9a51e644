"""How recognisable generated digits are, measured by a classifier of the real ones.

A logistic-regression classifier is fit on scikit-learn's 1,797 real 8x8 digits
(about 97% accurate on held-out real digits). Generated samples are box-averaged
back to 8x8 gray in the data's 0..16 range and classified; the score is the
fraction predicted as the class that was asked for.

  python -m gan_core.eval.digits samples.npz   # .npz from `biggan_jax.sample`
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


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    sys.exit("usage: python -m gan_core.eval.digits SAMPLES.npz")
  data = np.load(argv[1])
  print(f"digit_accuracy: {digit_accuracy(data['images'], data['labels']):.4f} "
        f"({len(data['labels'])} samples)")


if __name__ == "__main__":
  main(sys.argv)
