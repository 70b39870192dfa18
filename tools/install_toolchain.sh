#!/usr/bin/env bash
# Install the Debian packages the firmware builds need (cross compilers, picolibc, QEMU) when
# they are missing: as root, or through sudo when it works without a password. Used by .ci/run
# and by `make demo` / `make test`. Exit status 0 when everything is installed, 1 when something
# is missing and cannot be installed here (the message says what and how).
set -euo pipefail

PACKAGES=(gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm
          gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc make)

need=()
for pkg in "${PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "lumamba: missing Debian packages: ${need[*]}" >&2
    echo "lumamba: cannot install them here (not root, and no password-less sudo); run:" >&2
    echo "    sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "lumamba: installing Debian packages: ${need[*]}"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}"
