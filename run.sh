#!/usr/bin/env bash
# jaxnoisy's two set-up commands:
#   bash run.sh main   # SGD, SAM and the seed methods on real Fashion-MNIST, 40% instance noise
#   bash run.sh test   # the test suite (it builds the docs too, warnings as errors)
# Each creates (or reuses) the virtual environment .venv, installs jaxnoisy into it (with
# its test and docs extras), and installs Debian's dataset-fashion-mnist when it is
# missing and apt-get can be used. And:
#   bash run.sh docs   # the documentation site, into docs/_build/html
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
FMNIST=/usr/share/datasets/fashion-mnist

ensure_venv() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  local stamp="$VENV/.jaxnoisy-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test,docs]"
    touch "$stamp"
  fi
}

# Returns 0 when the Fashion-MNIST IDX files are available (installing them if it can).
ensure_data() {
  if [ -n "${JAXNOISY_DATA:-}" ] || [ -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"; }
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
    $sudo apt-get update -qq >/dev/null && \
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null && \
      return 0
  fi
  echo "jaxnoisy: Fashion-MNIST not found; install it as root with 'apt-get install dataset-fashion-mnist', or set JAXNOISY_DATA to a directory holding the four IDX .gz files" >&2
  return 1
}

case "${1:-}" in
  main)
    ensure_venv
    ensure_data
    shift
    exec "$VENV/bin/python" experiments/main_job.py "$@"
    ;;
  test)
    ensure_venv
    ensure_data || echo "jaxnoisy: the tests that need the real files will be skipped" >&2
    shift
    exec "$VENV/bin/python" -m pytest tests "$@"
    ;;
  docs)
    ensure_venv
    shift
    exec "$VENV/bin/python" -m sphinx -W -b html docs docs/_build/html "$@"
    ;;
  *)
    echo "usage: bash run.sh main|test|docs" >&2
    exit 2
    ;;
esac
