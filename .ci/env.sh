# Shared settings for the .ci scripts (sourced, not run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build outputs live outside the clone so CI and fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stratus-target}"
export STRATUS_WASM_DIR="${STRATUS_WASM_DIR:-$CARGO_TARGET_DIR/stratus-wasm}"
STRATUS_VENV="${STRATUS_VENV:-$HOME/.cache/stratus-venv}"
MOTO_PORT="${MOTO_PORT:-5000}"
REDIS_PORT="${REDIS_PORT:-6379}"
POSTGRES_PORT="${POSTGRES_PORT:-5432}"
NATS_PORT="${NATS_PORT:-4222}"

# The local AWS emulator accepts any credentials; these keep the SDK's credential chain
# from ever looking for instance metadata.
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:$MOTO_PORT}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
export STRATUS_TEST_NATS_URL="${STRATUS_TEST_NATS_URL:-nats://127.0.0.1:$NATS_PORT}"
export STRATUS_TEST_REDIS_URL="${STRATUS_TEST_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
export STRATUS_TEST_POSTGRES_URL="${STRATUS_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:$POSTGRES_PORT/test}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "error: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  if command -v apt-get >/dev/null; then
    log "installing $* (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "error: please install: $*" >&2
    return 1
  fi
}
