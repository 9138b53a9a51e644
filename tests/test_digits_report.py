"""The digits report compares like with like: real digits as the model sees them, equal set
sizes, and the real baseline beside every figure."""
import numpy as np
import pytest

from gan_core.data.sources import digits_source
from gan_core.eval import digits


def test_real_digits_score_like_the_baseline_and_copies_score_no_recall():
  source = digits_source(32)
  (reference, _), (baseline, _) = digits.real_split(32)
  assert len(reference) + len(baseline) == 1797
  # The baseline half: real digits the reference never saw, through the same pipeline.
  real = digits.digit_report(source.images, source.labels)
  assert real["n"] == 898
  assert 0.85 < real["real"]["precision"] < 0.95 and 0.85 < real["real"]["recall"] < 0.95
  assert real["real"]["diversity"] == pytest.approx(1.0)
  assert real["real"]["digit_accuracy"] > 0.93
  # Ten near-copies per class: right class, on the manifold, but no recall and no variety.
  rng = np.random.default_rng(0)
  one_each = np.stack([source.images[np.flatnonzero(source.labels == c)[0]] for c in range(10)])
  labels = rng.integers(0, 10, 898)
  copies = np.clip(one_each[labels].astype(int) + rng.integers(-2, 3, (898, 32, 32, 3)), 0, 255)
  report = digits.digit_report(copies.astype(np.uint8), labels)["samples"]
  assert report["recall"] < 0.05 and report["diversity"] < 0.05
  assert report["precision"] > 0.5
  text = digits.format_report(digits.digit_report(copies.astype(np.uint8), labels))
  assert "recall" in text and "real" in text
  with pytest.raises(ValueError, match="too few"):
    digits.digit_report(copies[:5].astype(np.uint8))


def test_command_line_help_and_bad_arguments(capsys):
  digits.main(["digits", "--help"])  # Prints the measure's description, exits normally.
  assert "precision" in capsys.readouterr().out
  with pytest.raises(SystemExit, match="usage"):
    digits.main(["digits"])
  with pytest.raises(SystemExit, match="usage"):
    digits.main(["digits", "--step=3"])
