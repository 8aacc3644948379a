#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, every test (unit, property, golden-frame,
# end-to-end with the sim, pymodbus/mbpoll interoperability, the seal-node image under QEMU),
# and the seal-node image with its size.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export SEALWATCH_PYTHON="$PWD/target/venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The firmware on its own, without std, as the MCU builds it.
cargo clippy -p sealwatch-firmware --lib --locked -- -D warnings
cargo test --workspace --locked
# The MCU image (its own workspace; memory.x caps it at 32 KiB flash / 8 KiB RAM, so an image
# that outgrows them fails to link), and its size.
CARGO_TARGET_DIR=target/mcu cargo build --release --locked --target thumbv7em-none-eabihf \
  --manifest-path firmware/mcu/Cargo.toml
size target/mcu/thumbv7em-none-eabihf/release/sealwatch-seal-node
