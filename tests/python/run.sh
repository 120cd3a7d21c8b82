#!/usr/bin/env bash
# Runs the boto3 smoke test (smoke_boto3.py) against a real `timeshard` server process:
#
# 1. builds the server binary: `cargo build -p timeshard-server --bin timeshard` (quick when it
#    is up to date), in the workspace's target directory (as `cargo metadata` reports it, so
#    CARGO_TARGET_DIR and .cargo/config are honoured);
# 2. creates <target dir>/py-venv with the pinned boto3 of requirements.txt, once (again only
#    when requirements.txt changes);
# 3. starts the binary on a free loopback port, with a temporary data directory, `--sync never`
#    and a test key pair, and waits for /health;
# 4. runs the script with the environment any boto3 program reads (AWS_ACCESS_KEY_ID,
#    AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; no config files, no instance metadata) and the
#    server's URL as endpoint_url;
# 5. stops the server (SIGTERM) and deletes the data directory, whatever happened.
#
# Exits 0 only if the smoke test passed. Needs python3 with the venv module (Debian: python3 and
# python3-venv, which .ci/run installs when missing) and, the first time, access to PyPI.
# tests/tests/boto3.rs runs this script from `cargo test`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cargo_bin="${CARGO:-cargo}"

fail() {
    echo "tests/python/run.sh: $*" >&2
    exit 1
}

# The first of `python3` on PATH and /usr/bin/python3 (Debian's, when PATH has another one, e.g.
# pyenv's) that can create virtual environments.
python3=""
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        python3="$candidate"
        break
    fi
done
if [ -z "$python3" ]; then
    if command -v python3 >/dev/null 2>&1; then
        fail "python3 ($(command -v python3)) cannot create virtual environments: its venv/ensurepip modules are missing. Install them (Debian: apt-get install -y python3-venv); .ci/run does."
    fi
    fail "python3 is not installed. Install it (Debian: apt-get install -y python3 python3-venv); .ci/run does."
fi
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is not installed"

target_dir="$("$cargo_bin" metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    "$python3" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

echo "== building the server binary" >&2
"$cargo_bin" build --manifest-path "$root/Cargo.toml" -p timeshard-server --bin timeshard
bin="$target_dir/debug/timeshard"
[ -x "$bin" ] || fail "cargo build did not produce $bin"

# The venv is shared by every run on this target directory; the lock keeps two concurrent runs
# from building it at the same time, the stamp says which requirements it holds.
venv="$target_dir/py-venv"
(
    flock 9
    if ! cmp -s "$here/requirements.txt" "$venv/requirements.installed" 2>/dev/null ||
        ! "$venv/bin/python" -c 'import boto3' >/dev/null 2>&1; then
        echo "== creating $venv" >&2
        rm -rf "$venv"
        "$python3" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$here/requirements.txt"
        cp "$here/requirements.txt" "$venv/requirements.installed"
    fi
) 9>"$target_dir/py-venv.lock"
python="$venv/bin/python"

# From here on nothing may go through a proxy: the server is on loopback.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

# The server must see only the options given below, not the caller's TIMESHARD_* settings.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^TIMESHARD_' || true)

akid="AKIDTIMESHARDBOTO3"
secret="timeshard-boto3-smoke-secret"
region="us-east-1"
work="$(mktemp -d "${TMPDIR:-/tmp}/timeshard-boto3.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

healthy() {
    "$python" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# A free port is picked, then bound by the server; if another process takes it in between the
# server exits at once and the next attempt picks another port.
port=""
for attempt in 1 2 3; do
    candidate="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$candidate" --sync never \
        --region "$region" --access-key-id "$akid" --secret-access-key "$secret" \
        --log info >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 200); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        if healthy "$candidate"; then
            port="$candidate"
            break 2
        fi
        sleep 0.05
    done
    echo "== server attempt $attempt on port $candidate did not become healthy; its log:" >&2
    cat "$work/server.log" >&2
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
done
[ -n "$port" ] || fail "the server did not start"
echo "== server $bin listening on 127.0.0.1:$port (pid $server_pid)" >&2

status=0
env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_KINESIS \
    -u AWS_ENDPOINT_URL_KINESIS_VIDEO \
    AWS_ACCESS_KEY_ID="$akid" AWS_SECRET_ACCESS_KEY="$secret" AWS_DEFAULT_REGION="$region" \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_EC2_METADATA_DISABLED=true \
    "$python" "$here/smoke_boto3.py" "http://127.0.0.1:$port" || status=$?

if [ "$status" -ne 0 ]; then
    echo "== the smoke test failed (exit $status); server log:" >&2
    cat "$work/server.log" >&2
fi
exit "$status"
