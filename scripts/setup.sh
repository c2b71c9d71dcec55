#!/usr/bin/env bash
# Installs everything dlstream needs on a fresh Debian 12 machine: apt packages, the venv with the project
# and its dev tools, and the Kafka jars from Maven Central. Idempotent; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  redis-server            # Redis of the local stack
  openssl                 # the secure stack's CA and certificates
  default-jre-headless    # runs the Kafka broker
  maven                   # resolves the Kafka jars from Maven Central
  libpython3.11           # Triton's Python backend stub links the system libpython
  python3-venv
  espeak-ng               # synthesises the spoken-digit data set
  fortunes                # the fortune categories of the text data set
  docker-compose          # validates docker-compose.yml against the Compose specification (tests)
  chromium                # renders the drift report page in the tests (headless screenshot)
  containerd              # the real node of the tests/k8s tier (with the kubelet built there)
  containernetworking-plugins  # its loopback network for hostNetwork pods
  podman                  # builds the worker image without a Docker engine
  mmdebstrap              # the image's Debian base, from Debian's archive
  gcc                     # the pause image, from Kubernetes's pause.c
  libc6-dev               # static libc for it
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Started by root, the local stack runs Kafka, Redis and Triton as this unprivileged system user
# (DLSTREAM_STACK__SERVICE_USER).
if [ "$(id -u)" -eq 0 ] && ! id -u dlstream >/dev/null 2>&1; then
  echo "setup: adding the system user dlstream (the local stack's servers run as it when started by root)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dlstream
fi

# Triton's Python backend stub links Debian's libpython3.11; the venv must sit on that same interpreter build,
# or the stub runs Debian's libpython against another build's standard library (C extensions fail to load).
PYTHON="${PYTHON:-/usr/bin/python3.11}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: $PYTHON is not Python 3.11 (the Triton backend stub needs 3.11); set PYTHON=" >&2
  exit 1
fi
base="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" != "$base" ]; then
  echo "setup: .venv was built on another Python; rebuilding it on $PYTHON"
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.dlstream-setup
want="$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch is large; the first install downloads it, later ones link it from uv's cache)"
  # uv (from PyPI) installs the same resolution as pip; from its cache it links the wheels' files instead of
  # unpacking several GB of CUDA libraries into every fresh clone (seconds instead of minutes).
  .venv/bin/python -m pip install -q uv
  # setuptools warns on every editable install of a package mapped from folders (services/, pipelines/)
  # that other names could shadow; dlstream is the only name either folder holds.
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/uv pip install -q --python .venv/bin/python -e '.[dev]'
  echo "$want" > "$stamp"
fi

.venv/bin/dlstream stack install

# The Strimzi, KEDA and Prometheus-operator CRD schemas that tests/deploy validates k8s/ against (npm registry).
validator=tests/deploy/crd-validation
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: installing Debian packages: nodejs npm"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
lock="$(sha256sum "$validator/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$validator/node_modules/.dlstream-setup" 2>/dev/null)" != "$lock" ]; then
  echo "setup: installing the CRD schema packages into $validator/node_modules"
  npm ci --prefix "$validator" --no-audit --no-fund --loglevel=error
  echo "$lock" > "$validator/node_modules/.dlstream-setup"
fi
