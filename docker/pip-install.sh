#!/bin/sh
# pip install for image builds: from /wheelhouse alone when the build brought wheels there (air-gapped sites:
# `make wheelhouse` fills ./wheelhouse on a connected host), else from the package index.
set -eu
wheelhouse="${WHEELHOUSE:-/wheelhouse}"
if ls "$wheelhouse"/*.whl >/dev/null 2>&1; then
  echo "pip-install: offline, from $wheelhouse" >&2
  exec python3 -m pip install --no-cache-dir --no-index --find-links "$wheelhouse" "$@"
fi
echo "pip-install: from the package index" >&2
exec python3 -m pip install --no-cache-dir "$@"
