#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with the Rust toolchain:
# socat (virtual serial lines), mbpoll (the command-line poller technicians use), chromium and
# chromium-driver (the status page tested in a real headless browser), QEMU for the
# seal-node image, the Cortex-M target, and a Python venv with pymodbus (an independent Modbus
# implementation). Idempotent: a second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

APT_PACKAGES=(socat mbpoll chromium chromium-driver faketime util-linux)
# A python3 able to make venvs (the machine image has one; a bare Debian needs python3-venv).
python3 -m venv --help >/dev/null 2>&1 || APT_PACKAGES+=(python3 python3-venv)
missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU >= 9 (pty chardev at a fixed path) from bookworm-backports: plain bookworm's 7.2 would
# also replace the machine's qemu-utils 10. A private source list reuses the machine's own mirror,
# so nothing under /etc/apt changes.
if ! command -v qemu-system-arm >/dev/null 2>&1; then
  echo "setup: installing qemu-system-arm from bookworm-backports"
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  if [ -z "$uri" ]; then
    echo "setup: no Debian mirror found in /etc/apt/sources.list.d/*.sources; install qemu-system-arm (>= 9) by hand" >&2
    exit 1
  fi
  parts="$(mktemp -d)"
  trap 'rm -rf "$parts"' EXIT
  cp /etc/apt/sources.list.d/*.sources "$parts/"
  cat >"$parts/backports.sources" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$parts")
  $SUDO apt-get "${opts[@]}" update -qq
  $SUDO apt-get "${opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports qemu-system-arm >/dev/null
fi

# Python venv with pymodbus for the interoperability tests.
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
