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
# KEEP_WORK=1 (keep the work folder), S3S_FS (path to s3s-fs), TMPDIR,
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

# blob_key_of FILE: the store key songfs gives FILE's bytes (content::blob_key).
blob_key_of() { local h; h=$(sha256sum "$1" | cut -c1-64); echo "blobs/sha256/${h:0:2}/$h"; }
# blob_landed PATH SIZE: the object file is in s3s-fs's folder at its full size.
blob_landed() { [ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ]; }
# wait_fine SECONDS TEST...: wait_for, polling every 2 ms (for timings).
wait_fine() {
  local end=$(($(now_ns) + $1 * 1000000000))
  shift
  while [ "$(now_ns)" -lt "$end" ]; do "$@" && return 0; sleep 0.002; done
  return 1
}
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

log "ranged GET of 64 KiB"
runs=()
for ((i = 0; i < RUNS; i++)); do
  drop_caches
  runs+=("$(out_of "$RANGEGET" get --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" f10 --offset 0 --len 65536)")
done
record rangeget_ms "${runs[@]}"

log "one PUT of 64 MiB (fresh bytes)"
runs=()
for ((i = 0; i < RUNS; i++)); do
  fresh_w64
  runs+=("$(out_of "$RANGEGET" put --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" "put_$i" "$DATA/w64")")
done
record put_ms "${runs[@]}"

# ---------------------------------------------------------------- songfs

SONGFS_OK=1
songfs_fail() { SONGFS_OK=0; NOTE[songfs]="songfs columns skipped: $*"; log "songfs: $*"; }

if HOME_A=$(new_device a) && songfs_mount "$HOME_A" "$WORK/mnt-a"; then
  log "songfs: writing the test files through the mount"
  cp "$DATA/f256" "$DATA/f10" "$DATA/f1g" "$WORK/mnt-a/" && cp -r "$DATA/many" "$WORK/mnt-a/" ||
    songfs_fail "copying into the mount failed"
  # Unmount finishes the uploads, so other devices can read everything afterwards.
  songfs_unmount "$HOME_A" "$WORK/mnt-a"
else
  songfs_fail "songfs init/mount failed (see the lines above)"
fi

if [ "$SONGFS_OK" = 1 ] && songfs_mount "$HOME_A" "$WORK/mnt-a"; then
  MA=$WORK/mnt-a
  log "songfs: cached sequential read"
  dd if="$MA/f256" of=/dev/null bs=1M 2>/dev/null # make sure it is in songfs's cache
  runs=()
  for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of dd if="$MA/f256" of=/dev/null bs=1M)"); done
  record songfs_cached_read_ms "${runs[@]}"

  log "songfs: ls -l of 5,000 files"
  runs=()
  for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of ls -l "$MA/many")"); done
  record songfs_ls_ms "${runs[@]}"
  n=$(ls "$MA/many" | wc -l)
  [ "$n" = 5000 ] || NOTE[ls]="songfs listed $n files, not 5000"

  log "songfs: write 64 MiB + close, then close -> blob in the store"
  # Fresh bytes every run; the blob's arrival is seen in s3s-fs's own data folder (the
  # object file at its full size), not in the daemon's status.
  runs=() landed=()
  for ((i = 0; i < RUNS; i++)); do
    fresh_w64
    blob=$WORK/s3/$BUCKET/bench/$(blob_key_of "$DATA/w64")
    runs+=("$(ms_of cp "$DATA/w64" "$MA/w64_$i")")
    t0=$(now_ns)
    if wait_fine "$WAIT_SECS" blob_landed "$blob" $((64 << 20)); then
      landed+=("$(awk -v d=$(($(now_ns) - t0)) 'BEGIN { printf "%.2f\n", d / 1e6 }')")
    else
      landed+=(FAIL)
    fi
    cmp -s "$DATA/w64" "$MA/w64_$i" || NOTE[write]="songfs: the written file w64_$i reads back different!"
  done
  record songfs_write_ms "${runs[@]}"
  record songfs_landed_ms "${landed[@]}"
  songfs_unmount "$HOME_A" "$WORK/mnt-a"
elif [ "$SONGFS_OK" = 1 ]; then
  songfs_fail "remounting device a failed"
fi

# cold_device N: a NEW device on the same store (its own empty cache, no chunk-hash
# records), mounted at $WORK/mnt-cN once device a's files have arrived from its
# namespace; sets COLD_HOME and COLD_DIR.
cold_device() {
  COLD_HOME=$(new_device "c$1") || return 1
  COLD_DIR=$WORK/mnt-c$1
  songfs_mount "$COLD_HOME" "$COLD_DIR" || return 1
  wait_for "$WAIT_SECS" test -e "$COLD_DIR/f1g" -a -e "$COLD_DIR/f256" -a -e "$COLD_DIR/f10" ||
    { log "device c$1 did not receive device a's files in ${WAIT_SECS}s"; return 1; }
}

if [ "$SONGFS_OK" = 1 ]; then
  log "songfs: cold reads (a new device for each run)"
  first=() cold=()
  for ((i = 0; i < RUNS; i++)); do
    cold_device "$i" || { songfs_fail "setting up a new device for a cold read failed"; break; }
    drop_caches
    first+=("$(out_of "$RANGEGET" read "$COLD_DIR/f10" --len 65536)")
    drop_caches
    cold+=("$(ms_of dd if="$COLD_DIR/f256" of=/dev/null bs=1M)")
    songfs_unmount "$COLD_HOME" "$COLD_DIR"
  done
  [ "${#first[@]}" = "$RUNS" ] && record songfs_first64k_ms "${first[@]}"
  [ "${#cold[@]}" = "$RUNS" ] && record songfs_cold_read_ms "${cold[@]}"
fi

# vm_mib PID FIELD: VmRSS (now) or VmHWM (the peak since the process started, kept by
# the kernel, so no sample is missed: each measurement uses a freshly mounted daemon).
vm_mib() { awk -v f="$2:" '$1 == f { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }

if [ "$SONGFS_OK" = 1 ]; then
  log "songfs: daemon memory, idle, reading 1 GiB cold (new device), writing 1 GiB"
  if cold_device mem; then
    pid=$(daemon_pid "$COLD_HOME")
    sleep 2
    RESULT[rss_idle]=$(vm_mib "$pid" VmRSS)
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
  if songfs_mount "$HOME_A" "$WORK/mnt-a"; then
    pid=$(daemon_pid "$HOME_A")
    head -c $((1024 << 20)) /dev/urandom >"$DATA/w1g"
    blob=$WORK/s3/$BUCKET/bench/$(blob_key_of "$DATA/w1g")
    if cp "$DATA/w1g" "$WORK/mnt-a/w1g" && wait_for "$WAIT_SECS" blob_landed "$blob" $((1024 << 20)); then
      RESULT[rss_peak_write]=$(vm_mib "$pid" VmHWM)
    else
      NOTE[rss_write]="writing 1 GiB (and its upload) failed or took over ${WAIT_SECS}s"
    fi
    rm -f "$DATA/w1g"
    songfs_unmount "$HOME_A" "$WORK/mnt-a"
  fi
fi

# ---------------------------------------------------------------- peers

peer_mount() { # peer_mount NAME DIR RUN-FUNCTION RUN-NUMBER: the function execs the client
  local name=$1 dir=$2 run=$3 n=$4
  mkdir -p "$dir"
  "$run" "$n" "$dir" >"$WORK/$name.log" 2>&1 &
  local pid=$!
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
  local cold=() first=()
  for ((i = 0; i < RUNS; i++)); do
    dir=$WORK/mnt-$name$i
    peer_mount "$name" "$dir" "$run" "$i" || { NOTE[$name]="$name failed to mount"; return; }
    drop_caches
    first+=("$(out_of "$RANGEGET" read "$dir/f10" --len 65536)")
    drop_caches
    cold+=("$(ms_of dd if="$dir/f256" of=/dev/null bs=1M)")
    peer_unmount "$dir"
  done
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
  row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "rclone mount, vfs-cache-mode full" "$(mibs rclone_cold_read_ms 256)"
  row "Cold sequential read, 256 MiB (MiB/s)" "$(mibs songfs_cold_read_ms 256)" "s3fs-fuse" "$(mibs s3fs_cold_read_ms 256)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "one ranged GET of 64 KiB" "$(v rangeget_ms)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "rclone mount" "$(v rclone_first64k_ms)"
  row "First 64 KiB of a cold 10 MiB file (ms)" "$(v songfs_first64k_ms)" "s3fs-fuse" "$(v s3fs_first64k_ms)"
  row "ls -l of 5,000 files (ms)" "$(v songfs_ls_ms)" "native disk" "$(v native_ls_ms)"
  row "Write 64 MiB + close (ms)" "$(v songfs_write_ms)" "native disk" "$(v native_write_ms)"
  row "Close -> blob in the S3 store, 64 MiB (ms)" "$(v songfs_landed_ms)" "one PUT of 64 MiB" "$(v put_ms)"
  echo "| Daemon RSS, idle (MiB, VmRSS) | $(v rss_idle) | | | |"
  echo "| Daemon RSS, peak reading 1 GiB cold (MiB, VmHWM) | $(v rss_peak_read) | | | |"
  echo "| Daemon RSS, peak writing 1 GiB + upload (MiB, VmHWM) | $(v rss_peak_write) | | | |"
  echo "| (that 1 GiB cold read, MiB/s) | $(v read1g_mibs) | | | |"
  echo
  for k in "${!NOTE[@]}"; do echo "- $k: ${NOTE[$k]}"; done
  echo
  echo "Raw runs (ms): see raw.tsv."
} | tee "$OUT_DIR/results.md"
for k in "${!RAW[@]}"; do printf '%s\t%s\n' "$k" "${RAW[$k]}"; done | sort >"$OUT_DIR/raw.tsv"
log "results in $OUT_DIR/results.md"
