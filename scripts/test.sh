#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every test, and the firmware image build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export SEALWATCH_PYTHON="$PWD/target/venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
