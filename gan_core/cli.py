"""Command-line helpers shared by the training and sampling entry points."""
from __future__ import annotations

import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser that reports bad config overrides in one clear line.

  ml_collections raises KeyError/AttributeError (with a "did you mean") for an
  unknown `--config.FIELD`, and TypeError/ValueError for a value of the wrong type.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nRun with --helpfull for the list of flags.\n")
    sys.exit(2)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    message = str(e.args[0] if e.args else e).strip("'\"").replace("\\n", " ").replace(
        "\\'", "'")
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.stderr.write(f"error: invalid config override {' '.join(bad)}: {message}\n"
                     "Every config field must already exist in the config file (the config "
                     "is locked so a typo cannot be silently ignored); run with --dry_run to "
                     "print all fields.\n")
    sys.exit(2)
