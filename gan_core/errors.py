"""Errors the user can fix by changing the configuration or the command line."""


class ConfigError(ValueError):
  """A config value that cannot work (with this model, dataset or device count); the
  message names the field and says what to choose. Entry points print it as one
  `error:` line."""
