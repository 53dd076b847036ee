#!/usr/bin/env bash
# The Python package's tests (python/tests, pytest), the second half of the README's test command.
# Creates .venv (git-ignored) on first use with maturin, numpy and pytest from PyPI, installs the
# package into it (`maturin develop --release`), and runs pytest against the engine and the
# release CLI, built from the same library so that their numbers agree bit for bit. (Cargo's test
# profile would reuse `cargo test`'s build, but `cargo rustc --profile test` builds a test
# harness, not the extension.)
#
#   scripts/test_python.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.8,<2" "numpy>=1.21" "pytest>=7"
# The CLI the tests compare against, from the same build.
cargo build -q --release --bin scalpel
VIRTUAL_ENV="$PWD/$venv" "$venv/bin/maturin" develop -q --release -m python/Cargo.toml
SCALPEL_CLI="$PWD/target/release/scalpel" "$venv/bin/python" -m pytest -q python/tests "$@"
