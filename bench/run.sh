#!/usr/bin/env bash
# songfs benchmark harness: songfs against native disk, rclone mount, s3fs-fuse and a
# bare ranged GET, all against one s3s-fs server on 127.0.0.1 that this script starts.
# See bench/README.md for what each number means. Output: a markdown table on stdout
# and in bench/out/results.md (raw runs in bench/out/raw.tsv).
#
# Every process it starts it stops, by PID; every mount it makes it unmounts (trap on
# exit, also on failure or Ctrl-C). Peers whose tool is missing are skipped with a note.
#
# Environment: RUNS (default 5), SKIP_BUILD=1 (use existing release binaries),
# KEEP_WORK=1 (keep the work folder), S3S_FS (path to s3s-fs), S3S_NODELAY=0 (s3s-fs
# as shipped, Nagle on: see bench/nodelay.c), TMPDIR,
# SONGFS_BIN / RANGEGET_BIN (use these binaries instead of this tree's release build).
set -euo pipefail

RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=$ROOT/bench/out

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- setup

[ -x "$S3S_FS" ] || die "s3s-fs not found: set S3S_FS or run \`cargo install s3s-fs --version 0.14.1 --features binary\`"
command -v fusermount3 >/dev/null || die "fusermount3 not found: install fuse3"
command -v python3 >/dev/null || die "python3 not found (used to pick a free port and make files)"

if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${SONGFS_BIN:-}${RANGEGET_BIN:-}" ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --bin songfs --example rangeget >&2)
fi
[ -x "$SONGFS" ] && [ -x "$RANGEGET" ] || die "release binaries missing: run without SKIP_BUILD=1"

start_s3s_fs

log "generating data"
DATA=$WORK/native
mkdir -p "$DATA/many" "$WORK/native-out"
head -c $((256 << 20)) /dev/urandom >"$DATA/f256"
head -c $((10 << 20)) /dev/urandom >"$DATA/f10"
head -c $((10 << 20)) /dev/urandom >"$DATA/f10s" # read while the new device's first sync runs
head -c $((1024 << 20)) /dev/urandom >"$DATA/f1g"
python3 - "$DATA/many" <<'EOF'
import os, sys
for i in range(5000):
    with open(os.path.join(sys.argv[1], f"take_{i:04d}.mp3"), "wb") as f:
        f.write(os.urandom(1024))
EOF

# Plain copies for the peers, uploaded through songfs's own S3 client (s3s-fs then
# knows their ETags; a file dropped into its folder gets its MD5 recomputed per HEAD).
for f in f256 f10; do
  "$RANGEGET" put --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" "$f" "$DATA/$f" >/dev/null
done

fresh_w64() { head -c $((64 << 20)) /dev/urandom >"$DATA/w64"; }

# ---------------------------------------------------------------- native baselines

log "native disk"
runs=()
for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of dd if="$DATA/f256" of=/dev/null bs=1M)"); done
record native_read_ms "${runs[@]}"
runs=()
for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of ls -l "$DATA/many")"); done
record native_ls_ms "${runs[@]}"
# Every write run writes fresh random bytes (the same bytes twice would measure songfs's
# dedup path); the source is written just before, so it is in the page cache.
runs=()
for ((i = 0; i < RUNS; i++)); do
  fresh_w64
  runs+=("$(ms_of cp "$DATA/w64" "$WORK/native-out/w64_$i")")
done
record native_write_ms "${runs[@]}"
rm -rf "$WORK/native-out"

# ---------------------------------------------------------------- ranged GET

# ranged_gets NAME LEN: RUNS cold ranged GETs of the first LEN bytes of f10.
ranged_gets() {
  local runs=() i
  for ((i = 0; i < RUNS; i++)); do
    drop_caches
    runs+=("$(out_of "$RANGEGET" get --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" f10 --offset 0 --len "$2")")
  done
  record "$1" "${runs[@]}"
}
log "ranged GETs of 64 KiB and of 256 KiB"
ranged_gets rangeget_ms 65536
# What songfs's first read asks for: the whole 256 KiB chunk its verification needs.
ranged_gets rangeget256k_ms 262144

log "the store's limit for a cold read: 256 MiB as ranged GETs of 1 MiB, 8 at a time"
# The physical limit a cold read is held to: the same GETs songfs's read-ahead makes,
# with nothing done to the bytes, and the server's CPU for them (on this machine the
# server and the client share 2 cores).
runs=()
cpu=()
for ((i = 0; i < RUNS; i++)); do
  drop_caches
  s0=$(cpu_ms "$S3S_PID")
  runs+=("$(out_of "$RANGEGET" fetch --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" f256 \
    --size $((256 << 20)) --len $((1 << 20)) --parallel 8)")
  cpu+=($(($(cpu_ms "$S3S_PID") - s0)))
done
record store_read_ms "${runs[@]}"
record store_read_server_cpu_ms "${cpu[@]}"

log "one PUT of 64 MiB (fresh bytes)"
runs=()
for ((i = 0; i < RUNS; i++)); do
  fresh_w64
  runs+=("$(out_of "$RANGEGET" put --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" "put_$i" "$DATA/w64")")
done
record put_ms "${runs[@]}"

log "songfs's hashing of 64 MiB (fresh bytes, from memory)"
# The work every write does on the bytes as they arrive (content/BackgroundHasher): a
# floor under "write + close" that a faster copy path cannot go below.
runs=()
for ((i = 0; i < RUNS; i++)); do
  fresh_w64
  runs+=("$(out_of "$RANGEGET" hash "$DATA/w64")")
done
record hash_ms "${runs[@]}"

# ---------------------------------------------------------------- songfs

# Two suites of the same measurements: `songfs` on an unencrypted store and `enc` on an
# encrypted one (--encrypt, default Argon2id cost: paid at init, not timed), both on the
# one s3s-fs. They run interleaved, run by run, and which goes first alternates: a drift
# over the run (the server's folder filling up, the disk's writeback, the page cache)
# then falls on both alike instead of on whichever suite ran second.
SUITES=(songfs enc)
echo "bench-passphrase-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$WORK/passphrase"
export SONGFS_PASSPHRASE_FILE=$WORK/passphrase

# use_suite LABEL: points new_device, cold_device and watch_landing at that suite's store.
use_suite() {
  case $1 in
    songfs) STORE_PREFIX=bench INIT_ARGS=() ENCRYPTED=0 ;;
    enc) STORE_PREFIX=bench-enc INIT_ARGS=(--encrypt) ENCRYPTED=1 ;;
  esac
}

declare -A HOME_A MNT_A SERIES # per suite: device a's home and mount; per LABEL_measure: the runs so far
add_run() { SERIES[$1]="${SERIES[$1]:+${SERIES[$1]} }$2"; }

# in_turn I: the suites still running, in run I's order (reversed on odd runs).
LIVE=()
in_turn() {
  local s=("${LIVE[@]+"${LIVE[@]}"}") i
  if (($1 % 2)); then for ((i = ${#s[@]} - 1; i >= 0; i--)); do echo "${s[$i]}"; done; else printf '%s\n' "${s[@]+"${s[@]}"}"; fi
}

# first_cycle_done HOME: the daemon of HOME reports a finished sync cycle.
first_cycle_done() {
  SONGFS_HOME=$1 "$SONGFS" status --json 2>/dev/null |
    python3 -c 'import json, sys; sys.exit(0 if (json.load(sys.stdin).get("sync_cycles") or 0) >= 1 else 1)'
}

# cold_device N: a NEW device on the current suite's store (its own empty cache, no
# chunk-hash records), mounted at $WORK/mnt-<store>-cN; sets COLD_HOME, COLD_DIR and
# COLD_SYNC_MS: from the mount command to device a's whole library listed (its first
# sync: the namespace pull).
cold_device() {
  COLD_HOME=$(new_device "c$1") || return 1
  COLD_DIR=$WORK/mnt-$STORE_PREFIX-c$1
  local t0
  t0=$(now_ns)
  songfs_mount "$COLD_HOME" "$COLD_DIR" || return 1
  wait_fine "$WAIT_SECS" test -e "$COLD_DIR/f1g" -a -e "$COLD_DIR/f256" -a -e "$COLD_DIR/f10" -a -e "$COLD_DIR/f10s" -a -e "$COLD_DIR/many/take_4999.mp3" ||
    { log "device c$1 did not receive device a's files in ${WAIT_SECS}s"; return 1; }
  COLD_SYNC_MS=$(since_ms "$t0")
}

# setup_suite LABEL: device a of the suite gets the test files through its mount, every
# upload finished (so other devices can read everything and close -> blob does not queue
# behind this backlog), then remounts. Fails (with a note) when songfs cannot be set up.
setup_suite() {
  local L=$1 home ma
  use_suite "$L"
  log "$L: writing the test files through the mount"
  home=$(new_device a) && ma=$WORK/mnt-$STORE_PREFIX-a && songfs_mount "$home" "$ma" ||
    { NOTE[$L]="$L skipped: init/mount failed (see the lines above)"; return 1; }
  cp "$DATA/f256" "$DATA/f10" "$DATA/f10s" "$DATA/f1g" "$ma/" && cp -r "$DATA/many" "$ma/" ||
    { NOTE[$L]="$L skipped: copying into the mount failed"; return 1; }
  uploads_drained "$home" || log "$L: device a's uploads did not drain in 600 s"
  songfs_unmount "$home" "$ma"
  songfs_mount "$home" "$ma" || { NOTE[$L]="$L skipped: remounting device a failed"; return 1; }
  dd if="$ma/f256" of=/dev/null bs=1M 2>/dev/null # in songfs's cache for the cached reads
  HOME_A[$L]=$home MNT_A[$L]=$ma
}

for L in "${SUITES[@]}"; do setup_suite "$L" && LIVE+=("$L"); done

log "cached sequential read; ls -l of 5,000 files"
for ((i = 0; i < RUNS; i++)); do
  for L in $(in_turn "$i"); do
    drop_caches
    add_run "${L}_cached_read_ms" "$(ms_of dd if="${MNT_A[$L]}/f256" of=/dev/null bs=1M)"
    drop_caches
    add_run "${L}_ls_ms" "$(ms_of ls -l "${MNT_A[$L]}/many")"
  done
done
for L in "${LIVE[@]+"${LIVE[@]}"}"; do
  n=$(ls "${MNT_A[$L]}/many" | wc -l)
  [ "$n" = 5000 ] || NOTE[${L}_ls]="$L listed $n files, not 5000"
done

log "write 64 MiB + close, then close -> blob in the store"
# Fresh bytes every run; the blob's arrival is seen in s3s-fs's own data folder (its
# rename into place at its full size, bench/landed.py), not in the daemon's status.
for ((i = 0; i < RUNS; i++)); do
  for L in $(in_turn "$i"); do
    use_suite "$L"
    fresh_w64
    watch_landing $((64 << 20)) || die "bench/landed.py did not start"
    pid=$(daemon_pid "${HOME_A[$L]}") c0=$(cpu_ms "$pid")
    add_run "${L}_write_ms" "$(ms_of cp "$DATA/w64" "${MNT_A[$L]}/w64_$i")"
    add_run "${L}_write_cpu_ms" $(($(cpu_ms "$pid") - c0))
    add_run "${L}_landed_ms" "$(landed_ms_since "$(now_ns)")"
    landing_done
    cmp -s "$DATA/w64" "${MNT_A[$L]}/w64_$i" || NOTE[${L}_write]="$L: the written file w64_$i reads back different!"
  done
done
for L in "${LIVE[@]+"${LIVE[@]}"}"; do songfs_unmount "${HOME_A[$L]}" "${MNT_A[$L]}"; done

log "cold reads (a new device for each run)"
for ((i = 0; i < RUNS; i++)); do
  for L in $(in_turn "$i"); do
    use_suite "$L"
    if ! cold_device "$i"; then
      NOTE[${L}_cold]="$L: setting up a new device for a cold read failed"
      for m in new_device_sync first64k_syncing first64k cold_read; do add_run "${L}_${m}_ms" FAIL; done
      continue
    fi
    add_run "${L}_new_device_sync_ms" "$COLD_SYNC_MS"
    # A first read right after the listing meets the tail of the first sync (the cycle
    # goes on after the last file appears) on the same 2 cores; it is kept as its own
    # row. The read rows below measure the device once that cycle is done, as the
    # issue's "six cold files, cache emptied" does (until 2026-12-07 they did not wait).
    drop_caches
    add_run "${L}_first64k_syncing_ms" "$(out_of "$RANGEGET" read "$COLD_DIR/f10s" --len 65536)"
    wait_for "$WAIT_SECS" first_cycle_done "$COLD_HOME" || log "device c$i: no finished sync cycle in ${WAIT_SECS}s"
    drop_caches
    add_run "${L}_first64k_ms" "$(out_of "$RANGEGET" read "$COLD_DIR/f10" --len 65536)"
    drop_caches
    # Who used the 2 cores during the read: the daemon and the S3 server (s3s-fs).
    pid=$(daemon_pid "$COLD_HOME") c0=$(cpu_ms "$pid") s0=$(cpu_ms "$S3S_PID")
    add_run "${L}_cold_read_ms" "$(ms_of dd if="$COLD_DIR/f256" of=/dev/null bs=1M)"
    add_run "${L}_cold_cpu_ms" $(($(cpu_ms "$pid") - c0))
    add_run "${L}_cold_server_cpu_ms" $(($(cpu_ms "$S3S_PID") - s0))
    songfs_unmount "$COLD_HOME" "$COLD_DIR"
  done
done
for k in "${!SERIES[@]}"; do
  # shellcheck disable=SC2086 # one word per run
  record "$k" ${SERIES[$k]}
done

if [[ " ${LIVE[*]-} " == *" songfs "* ]]; then
  use_suite songfs
  log "songfs: daemon memory, idle, reading 1 GiB cold (new device), writing 1 GiB"
  if cold_device mem; then
    pid=$(daemon_pid "$COLD_HOME")
    # Idle = after the first sync cycle has finished (the files appear during it).
    wait_for "$WAIT_SECS" first_cycle_done "$COLD_HOME" || log "device mem: no finished sync cycle in ${WAIT_SECS}s"
    sleep 2
    RESULT[rss_idle]=$(vm_mib "$pid" VmRSS)
    # The split shows what the idle figure is made of: the binary's code pages (shared,
    # the kernel drops them under pressure) and the daemon's own heap and stacks.
    RESULT[rss_idle_file]=$(vm_mib "$pid" RssFile)
    RESULT[rss_idle_anon]=$(vm_mib "$pid" RssAnon)
    # The peak so far is the first sync's (5,003 entries merged); reset it so the read's
    # peak is the read's own ("5": the high-water mark back to the current RSS).
    RESULT[rss_peak_sync]=$(vm_mib "$pid" VmHWM)
    reset_peak "$pid"
    drop_caches
    t=$(ms_of dd if="$COLD_DIR/f1g" of=/dev/null bs=1M)
    if [ "$t" != FAIL ]; then
      RESULT[rss_peak_read]=$(vm_mib "$pid" VmHWM)
      RESULT[read1g_mibs]=$(mib_per_s 1024 "$t")
    else
      NOTE[rss]="reading the 1 GiB file failed"
    fi
    songfs_unmount "$COLD_HOME" "$COLD_DIR"
  else
    NOTE[rss]="memory not measured: no new device could be set up"
  fi
  home_a=${HOME_A[songfs]} ma=${MNT_A[songfs]}
  if songfs_mount "$home_a" "$ma"; then
    pid=$(daemon_pid "$home_a")
    head -c $((1024 << 20)) /dev/urandom >"$DATA/w1g"
    reset_peak "$pid"
    watch_landing $((1024 << 20)) || die "bench/landed.py did not start"
    if cp "$DATA/w1g" "$ma/w1g" && [ "$(landed_ms_since "$(now_ns)")" != FAIL ]; then
      RESULT[rss_peak_write]=$(vm_mib "$pid" VmHWM)
    else
      NOTE[rss_write]="writing 1 GiB (and its upload) failed or took over ${WAIT_SECS}s"
    fi
    landing_done
    rm -f "$DATA/w1g"
    songfs_unmount "$home_a" "$ma"
  fi
fi

# ---------------------------------------------------------------- peers

peer_mount() { # peer_mount NAME DIR RUN-FUNCTION RUN-NUMBER: the function execs the client
  local name=$1 dir=$2 run=$3 n=$4
  mkdir -p "$dir"
  "$run" "$n" "$dir" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PEER_PID=$pid
  MOUNTS+=("fuse|$pid|$dir")
  if ! wait_for 30 mountpoint -q "$dir"; then
    log "$name did not mount: $(tail -3 "$WORK/$name.log")"
    unmount_entry "fuse|$pid|$dir"
    forget_mount "$dir"
    return 1
  fi
}

peer_unmount() {
  local m
  for m in "${MOUNTS[@]+"${MOUNTS[@]}"}"; do [ "${m##*|}" = "$1" ] && unmount_entry "$m"; done
  forget_mount "$1"
}

# peer_cold NAME RUN-FUNCTION: a fresh mount (and cache) per run.
peer_cold() {
  local name=$1 run=$2 i dir
  local cold=() first=() cpu=() server=() idle=() peak=() c0 s0
  for ((i = 0; i < RUNS; i++)); do
    dir=$WORK/mnt-$name$i
    peer_mount "$name" "$dir" "$run" "$i" || { NOTE[$name]="$name failed to mount"; return; }
    sleep 1
    idle+=("$(vm_mib "$PEER_PID" VmRSS)") # beside songfs's idle figure (which follows a sync)
    drop_caches
    first+=("$(out_of "$RANGEGET" read "$dir/f10" --len 65536)")
    drop_caches
    # The same split of the 2 cores as for songfs's cold read: the client, the server.
    c0=$(cpu_ms "$PEER_PID") s0=$(cpu_ms "$S3S_PID")
    cold+=("$(ms_of dd if="$dir/f256" of=/dev/null bs=1M)")
    cpu+=($(($(cpu_ms "$PEER_PID") - c0)))
    server+=($(($(cpu_ms "$S3S_PID") - s0)))
    peak+=("$(vm_mib "$PEER_PID" VmHWM)") # its whole life: mount, first 64 KiB, 256 MiB
    peer_unmount "$dir"
  done
  record "${name}_rss_idle" "${idle[@]}"
  record "${name}_rss_peak" "${peak[@]}"
  record "${name}_cold_cpu_ms" "${cpu[@]}"
  record "${name}_cold_server_cpu_ms" "${server[@]}"
  record "${name}_first64k_ms" "${first[@]}"
  record "${name}_cold_read_ms" "${cold[@]}"
}

if command -v rclone >/dev/null; then
  log "rclone mount --vfs-cache-mode full: cold reads"
  cat >"$WORK/rclone.conf" <<EOF
[bench]
type = s3
provider = Other
access_key_id = $ACCESS_KEY
secret_access_key = $SECRET_KEY
endpoint = $ENDPOINT
region = us-east-1
EOF
  # AWS_CA_BUNDLE (set on some machines) makes rclone's S3 client refuse to start even
  # for plain http; the endpoint here is plain http on loopback.
  rclone_run() {
    exec env -u AWS_CA_BUNDLE rclone --config "$WORK/rclone.conf" mount "bench:$PEER_BUCKET" "$2" \
      --vfs-cache-mode full --cache-dir "$WORK/rclone-cache-$1"
  }
  peer_cold rclone rclone_run
else
  NOTE[rclone]="rclone not installed: skipped"
fi

if command -v s3fs >/dev/null; then
  log "s3fs-fuse: cold reads"
  echo "$ACCESS_KEY:$SECRET_KEY" >"$WORK/passwd-s3fs"
  chmod 600 "$WORK/passwd-s3fs"
  s3fs_run() {
    exec s3fs "$PEER_BUCKET" "$2" -f -o "passwd_file=$WORK/passwd-s3fs" -o "url=$ENDPOINT" \
      -o use_path_request_style
  }
  peer_cold s3fs s3fs_run
else
  NOTE[s3fs]="s3fs not installed: skipped"
fi

# ---------------------------------------------------------------- report

v() { echo "${RESULT[$1]:-n/a}"; }
mibs() { [ -n "${RESULT[$1]:-}" ] && mib_per_s "$2" "${RESULT[$1]}" || echo n/a; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
row() { # row MEASURE SONGFS BASELINE-NAME BASELINE-VALUE
  echo "| $1 | $2 | $3 | $4 | $(ratio "$2" "$4") |"
}

enc_row() { # enc_row MEASURE PLAIN ENCRYPTED up|down (which way is better)
  local r ok
  r=$(ratio "$3" "$2")
  ok=$(awk -v r="$r" -v d="$4" 'BEGIN { if (r == "n/a") print "n/a"; else if (d == "up" ? r >= 0.9 : r <= 1.1) print "yes"; else print "**no**" }')
  echo "| $1 | $2 | $3 | $r | $ok |"
}

mkdir -p "$OUT_DIR"
{
  echo "# songfs benchmark"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), songfs $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') ($SONGFS), median of $RUNS runs."
  echo "Store: s3s-fs $("$S3S_FS" --version | awk '{ print $2 }') on 127.0.0.1 (loopback). Page cache:"
  if [ "$CAN_DROP" = 1 ]; then echo "dropped before every timed read and listing."; else
    echo "**not** dropped (no permission to write /proc/sys/vm/drop_caches): reads may come from memory."; fi
  echo "Ratio = songfs ÷ baseline: above 1 is better for MiB/s, below 1 is better for ms and MiB."
  echo
  echo "| Measurement | songfs | Baseline | Baseline value | Ratio |"
  echo "|---|---|---|---|---|"
  row "Cached sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cached_read_ms 256)" "native disk" "$(mibs native_read_ms 256)"
  row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "the store: ranged GETs of 1 MiB, 8 in parallel" "$(mibs store_read_ms 256)"
  row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "rclone mount, vfs-cache-mode full" "$(mibs rclone_cold_read_ms 256)"
  row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "s3fs-fuse" "$(mibs s3fs_cold_read_ms 256)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "one ranged GET of 64 KiB" "$(v rangeget_ms)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "one ranged GET of 256 KiB (the chunk verified)" "$(v rangeget256k_ms)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "rclone mount" "$(v rclone_first64k_ms)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "s3fs-fuse" "$(v s3fs_first64k_ms)"
  row "First 64 KiB, right after a new device's listing, its first sync still running (ms)" "$(v songfs_first64k_syncing_ms)" "one ranged GET of 256 KiB" "$(v rangeget256k_ms)"
  row "ls -l of 5,000 files (ms)" "$(v songfs_ls_ms)" "native disk" "$(v native_ls_ms)"
  row "Write 64 MiB + close (ms)" "$(v songfs_write_ms)" "native disk" "$(v native_write_ms)"
  row "Write 64 MiB + close (ms)" "$(v songfs_write_ms)" "songfs's hashing of 64 MiB alone" "$(v hash_ms)"
  echo "| … CPU the daemon used for that write (ms, both cores together) | $(v songfs_write_cpu_ms) | | | |"
  echo "| Cold read of 256 MiB: CPU of the songfs daemon / of the S3 server, s3s-fs (ms, 2 cores) | $(v songfs_cold_cpu_ms) / $(v songfs_cold_server_cpu_ms) | | | |"
  echo "| … CPU of the S3 server for the store's own 256 MiB of GETs (ms) | $(v store_read_server_cpu_ms) | | | |"
  echo "| … the same split for rclone / s3fs: client CPU, server CPU (ms) | $(v rclone_cold_cpu_ms) / $(v rclone_cold_server_cpu_ms); $(v s3fs_cold_cpu_ms) / $(v s3fs_cold_server_cpu_ms) | | | |"
  row "Close -> blob in the S3 store, 64 MiB (ms)" "$(v songfs_landed_ms)" "one PUT of 64 MiB" "$(v put_ms)"
  echo "| Daemon RSS, idle (MiB, VmRSS) | $(v rss_idle) | | | |"
  echo "| … of it the binary's code and data pages (RssFile) / heap and stacks (RssAnon) | $(v rss_idle_file) / $(v rss_idle_anon) | | | |"
  echo "| Daemon RSS, peak during a new device's first sync of the 5,003-file library (MiB, VmHWM) | $(v rss_peak_sync) | | | |"
  echo "| Daemon RSS, peak reading 1 GiB cold (MiB, VmHWM, reset after the sync) | $(v rss_peak_read) | | | |"
  echo "| Daemon RSS, peak writing 1 GiB + upload (MiB, VmHWM) | $(v rss_peak_write) | | | |"
  echo "| (that 1 GiB cold read, MiB/s) | $(v read1g_mibs) | | | |"
  echo "| Peers' RSS: after mounting / peak over the mount and its cold reads (MiB) | rclone $(v rclone_rss_idle) / $(v rclone_rss_peak); s3fs $(v s3fs_rss_idle) / $(v s3fs_rss_peak) | | | |"
  echo "| New device: mount -> 5,003-file library listed (ms) | $(v songfs_new_device_sync_ms) | | | |"
  echo
  echo "Encrypted store (--encrypt) beside the unencrypted one, same run. Ratio = encrypted ÷"
  echo "unencrypted; the target is within 10 % (0.90-1.10 for MiB/s, at most 1.10 for ms)."
  echo
  echo "| Measurement | unencrypted | encrypted | Ratio | Within 10 % |"
  echo "|---|---|---|---|---|"
  enc_row "Cached sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cached_read_ms 256)" "$(mibs enc_cached_read_ms 256)" up
  enc_row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "$(mibs enc_cold_read_ms 256)" up
  enc_row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "$(v enc_first64k_ms)" down
  enc_row "First 64 KiB, first sync still running (ms)" "$(v songfs_first64k_syncing_ms)" "$(v enc_first64k_syncing_ms)" down
  enc_row "ls -l of 5,000 files (ms)" "$(v songfs_ls_ms)" "$(v enc_ls_ms)" down
  enc_row "Write 64 MiB + close (ms)" "$(v songfs_write_ms)" "$(v enc_write_ms)" down
  enc_row "Close -> blob in the S3 store, 64 MiB (ms)" "$(v songfs_landed_ms)" "$(v enc_landed_ms)" down
  enc_row "New device: mount -> library listed (ms)" "$(v songfs_new_device_sync_ms)" "$(v enc_new_device_sync_ms)" down
  echo
  for k in "${!NOTE[@]}"; do echo "- $k: ${NOTE[$k]}"; done
  echo
  echo "Raw runs (ms): see raw.tsv."
} | tee "$OUT_DIR/results.md"
for k in "${!RAW[@]}"; do printf '%s\t%s\n' "$k" "${RAW[$k]}"; done | sort >"$OUT_DIR/raw.tsv"
log "results in $OUT_DIR/results.md"
