#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with the Rust toolchain.
# Idempotent: a second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: socat (virtual serial lines), mbpoll + libmodbus (the tools technicians use).
APT_PACKAGES=(socat)
# A python3 able to make venvs (the machine image has one; a bare Debian needs python3-venv).
python3 -m venv --help >/dev/null 2>&1 || APT_PACKAGES+=(python3 python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python venv with pymodbus, an independent Modbus implementation for interoperability tests.
VENV=target/venv
if ! "$VENV/bin/python" -c 'import pymodbus, serial' 2>/dev/null; then
  echo "setup: creating $VENV with pymodbus"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi

# Firmware cross-compilation target.
if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  rustup target add thumbv7em-none-eabihf
fi
echo "setup: ready"
