#!/bin/sh
# The image steps behind `make wheelhouse`, `make image` and `make push` (docker/README.md):
#
#   scripts/image.sh wheelhouse        download every Python package of the VARIANT image into ./wheelhouse, for
#                                      the image's Python and platform (not this host's), and record what for
#   scripts/image.sh build [ARGS...]   build the VARIANT image for this machine, tagged IMAGE_REF
#   scripts/image.sh push [ARGS...]    build it for PLATFORMS and push it (docker buildx; podman: a manifest list)
#
# The wheelhouse decides how a build gets its packages. When ./wheelhouse holds wheels, every pip install of the
# build runs from it alone (docker/pip-install.sh), so the build must ask for exactly what it holds: build and
# push pass the Python, torch and openai-whisper versions recorded in wheelhouse/wheelhouse.env as build
# arguments, and refuse a wheelhouse made for another variant or architecture. Without wheels the build installs
# from the package index and the PyTorch index; that index is asked first, from this host, so a host without it
# learns at once to make a wheelhouse rather than after a long build.
#
# Environment: VARIANT (cpu|nvidia|ascend, default cpu), CONTAINER_ENGINE (default docker), IMAGE_REF,
# BASE_IMAGE (default: the Dockerfile's), PLATFORMS (push), TORCH_INDEX_URL (default: the Dockerfile's; empty:
# pip's own index alone). For the wheelhouse: PYTHON_VERSION (default 3.10), ARCH (x86_64|aarch64, default this
# host's), TORCH_VERSION (default: the Dockerfile's), PIP_PYTHON (the python whose pip downloads, default python3).
# ARGS: further arguments of the build (the Makefile's BUILD_ARGS), passed last.
set -eu
cd "$(dirname "$0")/.."

action="${1:-}"
[ $# -eq 0 ] || shift
variant="${VARIANT:-cpu}"
dockerfile="docker/Dockerfile.$variant"
wheelhouse=wheelhouse
record="$wheelhouse/wheelhouse.env"

fail() { echo "$action: $*" >&2; exit 2; }
case "$action" in wheelhouse|build|push) ;; *) echo "usage: scripts/image.sh wheelhouse|build|push [ARGS...]" >&2; exit 2;; esac
[ -f "$dockerfile" ] || fail "VARIANT must be cpu, nvidia or ascend (no $dockerfile)"

# The Dockerfile's default for a build argument (ARG NAME=value), and a field of the wheelhouse's record.
arg_default() { sed -n "s/^ARG $1=//p" "$dockerfile" | head -n 1; }
recorded() { sed -n "s/^$1=//p" "$record" | head -n 1; }
has_wheels() { ls "$wheelhouse"/*.whl >/dev/null 2>&1; }
# Whether a package index answers from this host (its page for torch).
answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL -o /dev/null --max-time 20 "${1%/}/torch/" 2>/dev/null
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)' "${1%/}/torch/" 2>/dev/null
  fi
}
describe() { echo "the $1 image, Python $2, linux $3, torch $4"; }
torch_index="${TORCH_INDEX_URL-$(arg_default TORCH_INDEX_URL)}"

make_wheelhouse() {
  python_version="${PYTHON_VERSION:-3.10}"
  arch="${ARCH:-$(uname -m)}"
  torch_version="${TORCH_VERSION:-$(arg_default TORCH_VERSION)}"
  whisper_sdist="$(arg_default WHISPER_SDIST_VERSION)"
  pip_python="${PIP_PYTHON:-python3}"
  wanted="$(describe "$variant" "$python_version" "$arch" "$torch_version")"
  if [ -f "$record" ]; then
    made="$(describe "$(recorded VARIANT)" "$(recorded PYTHON_VERSION)" "$(recorded ARCH)" "$(recorded TORCH_VERSION)")"
    [ "$made" = "$wanted" ] || fail "./$wheelhouse holds $made; for $wanted empty it first: rm -r $wheelhouse"
  fi
  if [ -n "$torch_index" ] && ! answers "$torch_index"; then
    echo "wheelhouse: the PyTorch index $torch_index does not answer from this host: torch comes from pip's own" \
         "index configuration (TORCH_INDEX_URL=<a mirror of it> to use one; on x86_64 PyPI's torch is the CUDA build)" >&2
    torch_index=""
  fi
  packages="torch==$torch_version"
  [ "$variant" != ascend ] || packages="$packages torch-npu==$(arg_default TORCH_NPU_VERSION)"

  mkdir -p "$wheelhouse"
  echo "wheelhouse: $wanted -> ./$wheelhouse" >&2
  set -- --disable-pip-version-check download --dest "$wheelhouse" --only-binary=:all: \
    --implementation cp --python-version "$python_version" --abi "cp$(echo "$python_version" | tr -d .)" \
    --abi abi3 --abi none \
    --platform "manylinux_2_28_$arch" --platform "manylinux2014_$arch" --platform "linux_$arch" --platform any
  [ -z "$torch_index" ] || set -- "$@" --extra-index-url "$torch_index"
  # One resolution for everything, so the versions agree with each other as in the image.
  # shellcheck disable=SC2086
  "$pip_python" -m pip "$@" -r docker/requirements/build.txt -r docker/requirements/train.txt $packages
  if [ "$variant" = ascend ]; then
    echo "wheelhouse: MindSpeed's own requirements come from its repository (clone it, then" \
         "pip download -r MindSpeed/requirements.txt with the same options)" >&2
  fi
  # openai-whisper is published as an sdist only (platform independent; installed with --no-deps for its assets).
  "$pip_python" -m pip --disable-pip-version-check download --dest "$wheelhouse" --no-deps --no-binary=:all: \
    "openai-whisper==$whisper_sdist"
  # The record last: a wheelhouse without one is incomplete, and `make image` says so.
  {
    echo "# What this wheelhouse holds (scripts/image.sh wheelhouse); \`make image\` builds to match it."
    echo "VARIANT=$variant"
    echo "ARCH=$arch"
    echo "PYTHON_VERSION=$python_version"
    echo "TORCH_VERSION=$torch_version"
    echo "WHISPER_SDIST_VERSION=$whisper_sdist"
    [ "$variant" != ascend ] || echo "TORCH_NPU_VERSION=$(arg_default TORCH_NPU_VERSION)"
  } >"$record.partial"
  mv "$record.partial" "$record"
  echo "wheelhouse: $(find "$wheelhouse" -maxdepth 1 -name '*.whl' | wc -l) wheels in ./$wheelhouse" >&2
}

# docker's name for a machine's platform.
platform() { case "$1" in x86_64) echo linux/amd64;; aarch64) echo linux/arm64;; *) echo "linux/$1";; esac; }

# The build arguments this build needs (words without spaces), from the wheelhouse or the index.
build_args() {
  args=""
  [ -z "${BASE_IMAGE:-}" ] || args="--build-arg BASE_IMAGE=$BASE_IMAGE"
  if has_wheels; then
    [ -f "$record" ] || fail "./$wheelhouse holds wheels but no wheelhouse.env (its make wheelhouse did not" \
                             "finish): run make wheelhouse VARIANT=$variant again"
    made="$(describe "$(recorded VARIANT)" "$(recorded PYTHON_VERSION)" "$(recorded ARCH)" "$(recorded TORCH_VERSION)")"
    [ "$(recorded VARIANT)" = "$variant" ] || fail "./$wheelhouse holds $made: build VARIANT=$(recorded VARIANT)," \
                                                  "or rm -r $wheelhouse and make wheelhouse VARIANT=$variant"
    if [ "$action" = push ]; then targets="$PLATFORMS"; else targets="$(platform "$(uname -m)")"; fi
    [ "$targets" = "$(platform "$(recorded ARCH)")" ] || fail "./$wheelhouse holds $made, not for $targets:" \
      "make wheelhouse WHEEL_ARCH=<arch> for each platform (one wheelhouse at a time), or build without it"
    for name in PYTHON_VERSION TORCH_VERSION WHISPER_SDIST_VERSION TORCH_NPU_VERSION; do
      value="$(recorded "$name")"
      [ -z "$value" ] || args="$args --build-arg $name=$value"
    done
    echo "$action: offline, every package from ./$wheelhouse ($made)" >&2
  else
    if [ -n "$torch_index" ] && ! answers "$torch_index"; then
      fail "no wheels in ./$wheelhouse and the PyTorch index $torch_index does not answer from this host:" \
           "run make wheelhouse VARIANT=$variant first (pip's own index then serves torch; docker/README.md)," \
           "or set TORCH_INDEX_URL to a mirror of the index"
    fi
    [ -z "${TORCH_INDEX_URL+set}" ] || args="$args --build-arg TORCH_INDEX_URL=$torch_index"
  fi
  echo "$args"
}

run() { echo "$action: $*" >&2; "$@"; }

if [ "$action" = wheelhouse ]; then
  make_wheelhouse
  exit 0
fi
engine="${CONTAINER_ENGINE:-docker}"
ref="${IMAGE_REF:?IMAGE_REF: the image reference to tag}"
[ "$action" = build ] || : "${PLATFORMS:?PLATFORMS: the platforms to push, e.g. linux/amd64,linux/arm64}"
mkdir -p "$wheelhouse"  # the Dockerfiles copy it, empty or not
args="$(build_args)"
# shellcheck disable=SC2086  # $args: build arguments without spaces; the user's own ("$@") stay as given
if [ "$action" = build ]; then
  run "$engine" build -f "$dockerfile" -t "$ref" $args "$@" .
elif [ "$(basename "$engine")" = podman ]; then
  run "$engine" build --platform "$PLATFORMS" --manifest "$ref" -f "$dockerfile" $args "$@" .
  run "$engine" manifest push --all "$ref" "docker://$ref"
else
  run "$engine" buildx build --platform "$PLATFORMS" -f "$dockerfile" -t "$ref" $args "$@" --push .
fi
