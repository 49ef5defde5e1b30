#!/bin/sh
# Download every Python package an image installs into a wheelhouse folder, on a host that has the package
# index, for the image's Python version and platform (not this host's): `make wheelhouse` runs it, and the
# Dockerfiles then install from the folder with --no-index (docker/pip-install.sh), with no network.
#
# Inputs (environment): VARIANT (cpu|nvidia|ascend), WHEELHOUSE (folder, default ./wheelhouse),
# PYTHON_VERSION (default 3.10), ARCH (x86_64|aarch64, default this host's), PIP_PYTHON (the python whose pip
# downloads, default python3). TORCH_VERSION, TORCH_INDEX_URL and WHISPER_SDIST_VERSION default to the
# Dockerfile's ARG defaults, so the wheelhouse matches what the image asks for; set TORCH_INDEX_URL= (empty)
# to use only pip's own configuration.
set -eu
cd "$(dirname "$0")/.."

variant="${VARIANT:-cpu}"
dockerfile="docker/Dockerfile.$variant"
[ -f "$dockerfile" ] || { echo "wheelhouse: VARIANT must be cpu, nvidia or ascend (no $dockerfile)" >&2; exit 2; }

# The Dockerfile's default for a build argument (ARG NAME=value).
arg_default() { sed -n "s/^ARG $1=//p" "$dockerfile" | head -n 1; }

out="${WHEELHOUSE:-wheelhouse}"
python_version="${PYTHON_VERSION:-3.10}"
arch="${ARCH:-$(uname -m)}"
torch_version="${TORCH_VERSION:-$(arg_default TORCH_VERSION)}"
torch_index="${TORCH_INDEX_URL-$(arg_default TORCH_INDEX_URL)}"
whisper_sdist="${WHISPER_SDIST_VERSION:-$(arg_default WHISPER_SDIST_VERSION)}"
pip_python="${PIP_PYTHON:-python3}"
abi="cp$(echo "$python_version" | tr -d .)"

packages="torch==$torch_version"
if [ "$variant" = ascend ]; then
  packages="$packages torch-npu==$(arg_default TORCH_NPU_VERSION)"
fi

mkdir -p "$out"
echo "wheelhouse: $variant image, Python $python_version, linux $arch, torch $torch_version -> $out" >&2
set -- --disable-pip-version-check download --dest "$out" --only-binary=:all: \
  --implementation cp --python-version "$python_version" --abi "$abi" --abi abi3 --abi none \
  --platform "manylinux_2_28_$arch" --platform "manylinux2014_$arch" --platform "linux_$arch" --platform any
if [ -n "$torch_index" ]; then
  set -- "$@" --extra-index-url "$torch_index"
fi
# One resolution for everything, so the versions agree with each other as in the image.
# shellcheck disable=SC2086
"$pip_python" -m pip "$@" -r docker/requirements/build.txt -r docker/requirements/train.txt $packages
if [ "$variant" = ascend ]; then
  echo "wheelhouse: MindSpeed's own requirements come from its repository (clone it, then" \
       "pip download -r MindSpeed/requirements.txt with the same options)" >&2
fi
# openai-whisper is published as an sdist only (platform independent; installed with --no-deps for its assets).
"$pip_python" -m pip --disable-pip-version-check download --dest "$out" --no-deps --no-binary=:all: \
  "openai-whisper==$whisper_sdist"
echo "wheelhouse: $(find "$out" -maxdepth 1 -type f | wc -l) files in $out" >&2
