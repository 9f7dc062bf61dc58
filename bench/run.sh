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
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SONGFS=${SONGFS_BIN:-$TARGET_DIR/release/songfs}
RANGEGET=${RANGEGET_BIN:-$TARGET_DIR/release/examples/rangeget}
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
ACCESS_KEY=bench-access
SECRET_KEY=bench-secret-0123456789
BUCKET=songfs      # songfs's store: s3://songfs/bench
PEER_BUCKET=peers  # plain objects for rclone and s3fs (a bucket root: see README)
WAIT_SECS=120      # bound on every wait (mount, file visible, unmount)

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
head -c $((64 << 20)) /dev/urandom >"$DATA/w64"
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
  "$RANGEGET" put --url "s3://$PEER_BUCKET" --endpoint "$ENDPOINT" "$f" "$DATA/$f"
done

# ---------------------------------------------------------------- native baselines

log "native disk"
runs=()
for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of dd if="$DATA/f256" of=/dev/null bs=1M)"); done
record native_read_ms "${runs[@]}"
runs=()
for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of ls -l "$DATA/many")"); done
record native_ls_ms "${runs[@]}"
cat "$DATA/w64" >/dev/null # the source of every write test comes from the page cache
runs=()
for ((i = 0; i < RUNS; i++)); do
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

  log "songfs: write 64 MiB + close"
  # The drops before the reads above evicted the source; put it back in memory as for
  # the native run, so both sides copy from the page cache.
  cat "$DATA/w64" >/dev/null
  runs=()
  for ((i = 0; i < RUNS; i++)); do runs+=("$(ms_of cp "$DATA/w64" "$MA/w64_$i")"); done
  record songfs_write_ms "${runs[@]}"
  cmp -s "$DATA/w64" "$MA/w64_0" || NOTE[write]="songfs: the written file reads back different!"
  songfs_unmount "$HOME_A" "$WORK/mnt-a"
elif [ "$SONGFS_OK" = 1 ]; then
  songfs_fail "remounting device a failed"
fi

# cold_mount_a: mounts device a with an empty cache. Its blob files are deleted while
# it is unmounted (everything is uploaded by then); at mount songfs drops the index rows
# whose file is gone, so every byte read next comes from the store.
cold_mount_a() {
  mountpoint -q "$WORK/mnt-a" && songfs_unmount "$HOME_A" "$WORK/mnt-a"
  find "$HOME_A/cache/blobs" -type f -delete 2>/dev/null || true
  [ "$(find "$HOME_A/cache/blobs" -type f | wc -l)" = 0 ] || { log "the cache of device a is not empty"; return 1; }
  songfs_mount "$HOME_A" "$WORK/mnt-a" && test -e "$WORK/mnt-a/f256"
}

if [ "$SONGFS_OK" = 1 ]; then
  log "songfs: cold reads (cache emptied before each run)"
  first=() cold=()
  for ((i = 0; i < RUNS; i++)); do
    cold_mount_a || { songfs_fail "mounting device a with an empty cache failed"; break; }
    drop_caches
    first+=("$(out_of "$RANGEGET" read "$WORK/mnt-a/f10" --len 65536)")
    drop_caches
    cold+=("$(ms_of dd if="$WORK/mnt-a/f256" of=/dev/null bs=1M)")
  done
  [ "${#first[@]}" = "$RUNS" ] && record songfs_first64k_ms "${first[@]}"
  [ "${#cold[@]}" = "$RUNS" ] && record songfs_cold_read_ms "${cold[@]}"
fi

if [ "$SONGFS_OK" = 1 ]; then
  log "songfs: daemon memory, idle and reading 1 GiB cold"
  if cold_mount_a; then
    pid=$(daemon_pid "$HOME_A")
    sleep 2
    RESULT[rss_idle]=$(rss_mib "$pid")
    drop_caches
    t0=$(now_ns)
    dd if="$WORK/mnt-a/f1g" of=/dev/null bs=1M 2>/dev/null &
    reader=$!
    peak=0
    while kill -0 "$reader" 2>/dev/null; do
      r=$(rss_mib "$pid")
      [ -n "$r" ] && peak=$(awk -v a="$peak" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
      sleep 0.1
    done
    if wait "$reader"; then
      t1=$(now_ns)
      RESULT[rss_peak]=$peak
      RESULT[read1g_mibs]=$(mib_per_s 1024 "$(awk -v d=$((t1 - t0)) 'BEGIN { print d / 1e6 }')")
    else
      NOTE[rss]="reading the 1 GiB file failed"
    fi
  else
    NOTE[rss]="memory not measured: device a did not mount with an empty cache"
  fi
  mountpoint -q "$WORK/mnt-a" && songfs_unmount "$HOME_A" "$WORK/mnt-a"
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
  echo "| Daemon RSS, idle (MiB) | $(v rss_idle) | | | |"
  echo "| Daemon RSS, peak while reading 1 GiB cold (MiB) | $(v rss_peak) | | | |"
  echo "| (that 1 GiB cold read, MiB/s) | $(v read1g_mibs) | | | |"
  echo
  for k in "${!NOTE[@]}"; do echo "- $k: ${NOTE[$k]}"; done
  echo
  echo "Raw runs (ms): see raw.tsv."
} | tee "$OUT_DIR/results.md"
for k in "${!RAW[@]}"; do printf '%s\t%s\n' "$k" "${RAW[$k]}"; done | sort >"$OUT_DIR/raw.tsv"
log "results in $OUT_DIR/results.md"
