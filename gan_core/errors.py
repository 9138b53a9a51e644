"""Errors the user can fix: every entry point ends them in one `error:` line, exit 1, and
no traceback."""


class UserError(Exception):
  """Something the user can fix (a config value, a path, a file, the disk); the message
  says what happened and what to do."""


def first_line(error: BaseException) -> str:
  """The first line of an exception's message (its type name when it has none)."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


class ConfigError(UserError, ValueError):
  """A config value that cannot work (with this model, dataset or device count); the
  message names the field and says what to choose."""
