#!/usr/bin/env bash
# Installs the Debian 12 packages Tessera builds and tests with (docs/dependencies.md says why
# each is used). Installs only what is missing; needs root (or sudo).
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgloo-dev nlohmann-json3-dev libpcre2-dev libicu-dev
  libboost-dev libssl-dev libsentencepiece-dev
  python3 python3-numpy python3-jinja2 python3-sentencepiece python3-grpcio python3-venv python3-pip
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tessera: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
