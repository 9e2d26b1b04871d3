# Shared helpers for the local stack scripts. Source this file, do not run it.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="$REPO_ROOT/.run"
ENV_FILE="$RUN_DIR/env"
# shellcheck disable=SC2034 # used by the scripts that source this file
VENV_DIR="$REPO_ROOT/.venv"

log() {
    printf '[local] %s\n' "$*" >&2
}

die() {
    printf '[local] error: %s\n' "$*" >&2
    exit 1
}

require_root() {
    if [[ $(id -u) -ne 0 ]]; then
        die "run this script as root: it installs packages and runs PostgreSQL and RabbitMQ as their system users"
    fi
}

# Seconds since the epoch with two decimals, for the timings that the scripts print.
now_seconds() {
    date +%s.%2N
}

elapsed_since() {
    local start=$1
    awk -v start="$start" -v end="$(now_seconds)" 'BEGIN { printf "%.1f", end - start }'
}

# Load the PUSH_* settings that `services start` wrote, exported for child processes.
load_env_file() {
    [[ -f $ENV_FILE ]] || die "missing $ENV_FILE: run deploy/local/services start first"
    set -a
    # shellcheck source=/dev/null
    source "$ENV_FILE"
    set +a
}
