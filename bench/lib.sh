# Shared by the bench/ scripts (sourced, not run): the work folder and its cleanup (every
# mount unmounted, every process stopped by PID, also on failure or Ctrl-C), timing,
# medians, page-cache drops, songfs devices on one store, and the s3s-fs server.
# The sourcing script sets ROOT (the checkout) before sourcing, then calls start_s3s_fs.

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SONGFS=${SONGFS_BIN:-$TARGET_DIR/release/songfs}
RANGEGET=${RANGEGET_BIN:-$TARGET_DIR/release/examples/rangeget}
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
ACCESS_KEY=bench-access
SECRET_KEY=bench-secret-0123456789
BUCKET=songfs      # songfs's store: s3://songfs/bench
PEER_BUCKET=peers  # plain objects for rclone and s3fs (a bucket root: see README)
WAIT_SECS=120      # bound on every wait (mount, file visible, unmount)

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/songfs-bench.XXXXXX")
MOUNTS=() # "songfs|<home>|<dir>" or "fuse|<pid>|<dir>", in mount order
PIDS=()   # background processes started here (s3s-fs)

unmount_entry() {
  local kind=${1%%|*} rest=${1#*|}
  local arg=${rest%%|*} dir=${rest#*|}
  mountpoint -q "$dir" 2>/dev/null || { [ "$kind" = fuse ] && stop_pid "$arg"; return 0; }
  if [ "$kind" = songfs ]; then
    SONGFS_HOME=$arg timeout "$WAIT_SECS" "$SONGFS" unmount "$dir" >&2 ||
      fusermount3 -u "$dir" 2>/dev/null || fusermount3 -uz "$dir" 2>/dev/null || true
  else
    fusermount3 -u "$dir" 2>/dev/null || fusermount3 -uz "$dir" 2>/dev/null || true
    stop_pid "$arg"
  fi
}

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

forget_mount() {
  local keep=() m
  for m in "${MOUNTS[@]+"${MOUNTS[@]}"}"; do [ "${m##*|}" = "$1" ] || keep+=("$m"); done
  MOUNTS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
  set +e
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do unmount_entry "${MOUNTS[$i]}"; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}" ${LANDING_PID:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

now_ns() { date +%s%N; }

# ms_of CMD...: runs CMD (output discarded), prints its wall time in ms, or FAIL.
ms_of() {
  local t0 t1
  t0=$(now_ns)
  "$@" >/dev/null 2>>"$WORK/commands.log" || { echo FAIL; return 0; }
  t1=$(now_ns)
  awk -v d=$((t1 - t0)) 'BEGIN { printf "%.2f\n", d / 1e6 }'
}

# out_of CMD...: CMD's own output (a timing it measured itself), or FAIL.
out_of() { "$@" 2>>"$WORK/commands.log" || echo FAIL; }

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "NA"; exit }
  if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

mib_per_s() { awk -v mib="$1" -v ms="$2" 'BEGIN { printf "%.1f\n", mib / (ms / 1000) }'; }

CAN_DROP=0
if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi
drop_caches() {
  sync
  if [ "$CAN_DROP" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# wait_fine SECONDS TEST...: wait_for, polling every 2 ms (for timings).
wait_fine() {
  local end=$(($(now_ns) + $1 * 1000000000))
  shift
  while [ "$(now_ns)" -lt "$end" ]; do "$@" && return 0; sleep 0.002; done
  return 1
}

# since_ms START_NS: milliseconds since START_NS (from now_ns).
since_ms() { awk -v d=$(($(now_ns) - $1)) 'BEGIN { printf "%.2f\n", d / 1e6 }'; }

# vm_mib PID FIELD: VmRSS (now) or VmHWM (the peak since the process started or since
# reset_peak, kept by the kernel, so no sample is missed).
vm_mib() { awk -v f="$2:" '$1 == f { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }

# cpu_ms PID: the CPU time (user + system, all threads) PID has used so far, in ms
# (/proc/PID/stat fields 14 and 15, in clock ticks).
CLK_TCK=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null || echo FAIL; }

# reset_peak PID: VmHWM back to the current RSS (Linux >= 4.0), so the next peak read
# is that of what runs after it, not of the process's whole life.
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset the peak RSS of $1: the peak covers its whole life"; }

wait_for() { # wait_for SECONDS TEST...
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 10; i++)); do "$@" && return 0; sleep 0.1; done
  return 1
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

declare -A RESULT NOTE RAW
record() { # record NAME VALUES... (one per run): keeps the raw runs and the median
  local name=$1
  shift
  RAW[$name]="$*"
  if [[ " $* " == *" FAIL "* ]]; then
    NOTE[$name]="a run failed (see commands.log with KEEP_WORK=1): no result"
    unset "RESULT[$name]"
  else
    RESULT[$name]=$(printf '%s\n' "$@" | median)
  fi
}

# ---------------------------------------------------------------- songfs helpers

# songfs_mount HOME DIR: init is done; mounts and registers the mount.
songfs_mount() {
  mkdir -p "$2"
  SONGFS_HOME=$1 timeout "$WAIT_SECS" "$SONGFS" mount "$2" >&2 || return 1
  MOUNTS+=("songfs|$1|$2")
  wait_for 10 mountpoint -q "$2"
}

# uploads_drained HOME [SECS]: waits (default 600 s) until the daemon of HOME reports no
# upload pending. `songfs unmount` drains for at most 10 s and leaves the rest for the
# next start: a measurement after a remount would otherwise queue behind that backlog.
uploads_drained() {
  local end=$(($(now_ns) + ${2:-600} * 1000000000))
  while [ "$(now_ns)" -lt "$end" ]; do
    SONGFS_HOME=$1 "$SONGFS" status --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin).get("daemon") or {}
sys.exit(0 if d.get("pending_uploads") == 0 else 1)' && return 0
    sleep 0.5
  done
  return 1
}

songfs_unmount() {
  SONGFS_HOME=$1 timeout "$WAIT_SECS" "$SONGFS" unmount "$2" >&2 || true
  mountpoint -q "$2" && { fusermount3 -u "$2" 2>/dev/null || fusermount3 -uz "$2"; }
  forget_mount "$2"
}

# The store the songfs devices share: s3://$BUCKET/$STORE_PREFIX (or STORE_URL), made with INIT_ARGS
# (e.g. --encrypt; an encrypted store's passphrase is in $SONGFS_PASSPHRASE_FILE).
STORE_PREFIX=bench
INIT_ARGS=()

# new_device NAME: a fresh SONGFS_HOME set up with the store; prints its path.
new_device() {
  local home=$WORK/dev-$STORE_PREFIX-$1
  rm -rf "$home"
  mkdir -p "$home"
  local store=(--store "s3://$BUCKET/$STORE_PREFIX" --s3-endpoint "${ENDPOINT:-}")
  [ -n "${STORE_URL:-}" ] && store=(--store "$STORE_URL")
  SONGFS_HOME=$home "$SONGFS" init "${store[@]}" \
    --device-name "bench-$1" "${INIT_ARGS[@]+"${INIT_ARGS[@]}"}" >&2 || return 1
  echo "$home"
}

# sealed_size BYTES: what a blob of BYTES occupies in the store: as is, or, encrypted,
# the 48-byte header plus a 16-byte tag per 64 KiB chunk (doc/FORMAT.md).
sealed_size() {
  if [ "${ENCRYPTED:-0}" = 1 ]; then echo $((48 + $1 + 16 * (($1 + 65535) / 65536))); else echo "$1"; fi
}
# watch_landing SIZE: starts bench/landed.py, armed before it returns, to catch the
# moment s3s-fs puts an object of SIZE bytes (as stored: see sealed_size) in place.
# landed_ms_since T0 then prints the milliseconds from T0 (now_ns) to that moment, or
# FAIL. It takes no CPU while the upload runs (polling the store's folder with find did).
watch_landing() {
  rm -f "$WORK/landing-ready" "$WORK/landing-at"
  python3 "$ROOT/bench/landed.py" "$WORK/s3" "$(sealed_size "$1")" "$WORK/landing-ready" >"$WORK/landing-at" &
  LANDING_PID=$!
  wait_for 10 test -e "$WORK/landing-ready"
}
landed_ms_since() {
  # The watcher records the moment itself: checking its output every 0.1 s costs the
  # measurement nothing.
  local waited=0
  while ! [ -s "$WORK/landing-at" ] && [ $waited -lt $((WAIT_SECS * 10)) ]; do sleep 0.1; waited=$((waited + 1)); done
  if ! [ -s "$WORK/landing-at" ]; then
    kill "$LANDING_PID" 2>/dev/null || true
    echo FAIL
    return
  fi
  awk -v d=$(($(cat "$WORK/landing-at") - $1)) 'BEGIN { printf "%.2f\n", d / 1e6 }'
}
# landing_done: reaps the watcher (run in the main shell after landed_ms_since).
landing_done() {
  wait "$LANDING_PID" 2>/dev/null || true
  LANDING_PID=
}

# daemon_pid HOME: the running daemon holds daemon.lock and wrote its pid in it.
daemon_pid() { cat "$1/daemon.lock" 2>/dev/null; }


# start_s3s_fs: starts s3s-fs on a free loopback port (buckets BUCKET and PEER_BUCKET),
# with TCP_NODELAY on its sockets (bench/nodelay.c; S3S_NODELAY=0: as shipped), and
# sets ENDPOINT and the AWS environment for songfs and rangeget.
start_s3s_fs() {
  PORT=$(free_port)
  ENDPOINT=http://127.0.0.1:$PORT
  mkdir -p "$WORK/s3/$BUCKET" "$WORK/s3/$PEER_BUCKET"
  local preload=
  if [ "${S3S_NODELAY:-1}" = 1 ]; then
    preload=$WORK/nodelay.so
    cc -shared -fPIC -O2 -o "$preload" "$ROOT/bench/nodelay.c" -ldl ||
      die "building bench/nodelay.c failed (a C compiler is needed; S3S_NODELAY=0 runs s3s-fs without it)"
  fi
  LD_PRELOAD=$preload "$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
    "$WORK/s3" >"$WORK/s3s-fs.log" 2>&1 &
  PIDS+=($!)
  S3S_PID=$!
  wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null || die "s3s-fs did not start: $(tail -5 "$WORK/s3s-fs.log")"
  log "s3s-fs (pid ${PIDS[0]}) at $ENDPOINT"

  export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true RUST_LOG=${RUST_LOG:-warn}
}
