"""The CLI's one-line errors, as the tests of flags read them."""

import pytest

from jaxnoisy import cli


def one_line_error(tmp_path, capsys, argv) -> str:
  """Runs ``jaxnoisy train --out TMP/x ARGV``, which must exit with status 2 and print
  exactly one line on stderr; returns that line."""
  with pytest.raises(SystemExit) as exc:
    cli.main(["train", "--out", str(tmp_path / "x"), *argv])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  return err
