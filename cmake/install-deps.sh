#!/usr/bin/env bash
# Installs whatever kernattn's build is missing: a C++ compiler, CMake >= 3.25, Ninja,
# Eigen 3.4, Catch2 and Google Benchmark. Quick, and offline, when nothing is missing.
# Package managers: apt-get (Debian/Ubuntu), dnf (Fedora), Homebrew (macOS).
# With --clang (apt-get only) also Clang, its OpenMP runtime and libFuzzer, for the clang preset.
# With --mpi (apt-get only) also Open MPI, for the ring attention example (examples/mpi).
set -euo pipefail

with_clang=false
with_mpi=false
for option in "$@"; do
  case $option in
    --clang) with_clang=true ;;
    --mpi) with_mpi=true ;;
    *) printf 'install-deps: error: unknown option %s (known: --clang, --mpi)\n' "$option" >&2
       exit 2 ;;
  esac
done

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when root, through sudo otherwise.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "'$*' needs root privileges: run this script as root, or install sudo"
  fi
}

have() { command -v "$1" >/dev/null 2>&1; }

have_cxx() { have c++ || have g++ || have clang++; }

cmake_is_recent() {
  have cmake || return 1
  local version major minor
  version=$(cmake --version | head -n 1 | grep -Eo '[0-9]+\.[0-9]+' | head -n 1)
  IFS=. read -r major minor <<<"$version"
  ((major > 3 || (major == 3 && minor >= 25)))
}

missing=()

install_apt() {
  local pkg
  have_cxx || missing+=(g++)
  cmake_is_recent || missing+=(cmake)
  have ninja || missing+=(ninja-build)
  local packages=(libeigen3-dev catch2 libbenchmark-dev)
  if $with_clang; then
    have clang++ || missing+=(clang)
    packages+=(libomp-dev libclang-rt-dev)
  fi
  $with_mpi && packages+=(libopenmpi-dev openmpi-bin)
  for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return
  log "installing with apt-get: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

install_dnf() {
  local pkg
  have_cxx || missing+=(gcc-c++)
  cmake_is_recent || missing+=(cmake)
  have ninja || missing+=(ninja-build)
  for pkg in eigen3-devel catch2-devel google-benchmark-devel; do
    rpm -q "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return
  log "installing with dnf: ${missing[*]}"
  as_root dnf install -y "${missing[@]}"
}

install_brew() {
  local formula
  have_cxx || die "no C++ compiler found: run 'xcode-select --install' first"
  cmake_is_recent || missing+=(cmake)
  have ninja || missing+=(ninja)
  for formula in eigen catch2 google-benchmark; do
    brew list --versions "$formula" >/dev/null 2>&1 || missing+=("$formula")
  done
  ((${#missing[@]} == 0)) && return
  log "installing with brew: ${missing[*]}"
  brew install "${missing[@]}"
}

if [[ $(uname -s) == Darwin ]]; then
  have brew || die "Homebrew is needed on macOS (https://brew.sh)"
  install_brew
elif have apt-get; then
  install_apt
elif have dnf; then
  install_dnf
else
  die "unsupported system: install a C++20 compiler, CMake >= 3.25, Ninja, Eigen 3.4," \
    "Catch2 and Google Benchmark by hand"
fi

if ((${#missing[@]} == 0)); then
  log "all build dependencies are already installed"
fi
cmake_is_recent || die "CMake >= 3.25 is required, found: $(cmake --version 2>/dev/null | head -n 1)"
