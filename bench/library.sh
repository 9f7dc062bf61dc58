#!/usr/bin/env bash
# A library of 50,000 files in 5,000 folders (Song Factory keeps 2-4 files per song):
# how the mount lists it, and how long the first sync of a new device and a later sync
# of 100 changes take, with the daemon's memory. Issue 13's target: everything stays
# interactive, the new device's first sync under a minute.
#
# Device a writes the library through its mount (a folder store); device b is a new
# device: its mount, and the sync that lists the whole library, are timed. The same
# tree on the native disk is the baseline for the listings. The CI test of the same code
# path, at 2,000 files, is tests/library_size.rs.
#
# Environment: FILES (default 50000), PER_FOLDER (10), RUNS (5), SKIP_BUILD=1,
# SONGFS_BIN, KEEP_WORK=1, TMPDIR. Output: a markdown table on stdout and in
# bench/out/library.md.
set -euo pipefail

FILES=${FILES:-50000}
PER_FOLDER=${PER_FOLDER:-10}
RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=$ROOT/bench/out

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${SONGFS_BIN:-}" ]; then
  log "building the release binary"
  (cd "$ROOT" && cargo build --release --bin songfs >&2)
fi
[ -x "$SONGFS" ] || die "release binary missing: run without SKIP_BUILD=1"
command -v fusermount3 >/dev/null || die "fusermount3 not found: install fuse3"

STORE_URL=file://$WORK/store
mkdir -p "$WORK/store"
FOLDERS=$((FILES / PER_FOLDER))

# make_tree DIR: FILES files of 1 KiB of fresh random bytes, PER_FOLDER per folder, as
# the app names them (one folder per song: date_title, files title_vN.mp3 and so on).
make_tree() {
  python3 - "$1" "$FILES" "$PER_FOLDER" <<'EOF'
import os, sys
root, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(files):
    d = os.path.join(root, f"2026-01-01_song_{i // per:05d}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"song_{i // per:05d}_v{i % per}.mp3"), "wb") as f:
        f.write(os.urandom(1024))
EOF
}

# listings NAME DIR: ls -l of the top folder (a file browser opening the library), ls -l
# of one song folder, and find over the whole tree, each with the page cache dropped.
listings() {
  local name=$1 dir=$2 i runs one
  one=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -print -quit) # (head would SIGPIPE find under pipefail)
  runs=()
  for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of ls -l "$dir")"); done
  record "${name}_ls_top_ms" "${runs[@]}"
  runs=()
  for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of ls -l "$one")"); done
  record "${name}_ls_one_ms" "${runs[@]}"
  runs=()
  for ((i = 0; i < RUNS; i++)); do drop_caches; runs+=("$(ms_of find "$dir" -type f)"); done
  record "${name}_find_ms" "${runs[@]}"
  local n
  n=$(find "$dir" -type f | wc -l)
  [ "$n" = "$FILES" ] || NOTE[${name}_count]="$name: find saw $n files, not $FILES"
}

log "native disk: $FILES files in $FOLDERS folders"
mkdir -p "$WORK/native"
make_tree "$WORK/native"
listings native "$WORK/native"

log "device a: writing the library through the mount"
HOME_A=$(new_device a) || die "songfs init failed"
MA=$WORK/mnt-a
songfs_mount "$HOME_A" "$MA" || die "songfs mount failed"
t0=$(now_ns)
cp -r "$WORK/native/." "$MA/"
RESULT[write_tree_ms]=$(since_ms "$t0")
songfs_unmount "$HOME_A" "$MA" # finishes the uploads and sends the namespace
RESULT[write_and_upload_ms]=$(since_ms "$t0")

log "device b: a new device's first sync of $FILES files"
HOME_B=$(new_device b) || die "songfs init of device b failed"
MB=$WORK/mnt-b
t0=$(now_ns)
songfs_mount "$HOME_B" "$MB" || die "songfs mount of device b failed"
# `songfs sync` returns once a cycle after the mount's first one is done.
SONGFS_HOME=$HOME_B "$SONGFS" sync >&2 || NOTE[first_sync]="songfs sync on device b failed"
RESULT[first_sync_ms]=$(since_ms "$t0")
PID_B=$(daemon_pid "$HOME_B")
RESULT[rss_peak_first_sync]=$(vm_mib "$PID_B" VmHWM)
listings songfs "$MB"
sleep 2
RESULT[rss_idle]=$(vm_mib "$PID_B" VmRSS)
RESULT[rss_peak_listing]=$(vm_mib "$PID_B" VmHWM)

log "100 changed files: written on a, synced, then a sync on b"
songfs_mount "$HOME_A" "$MA" || die "remounting device a failed"
mapfile -t CHANGED < <(cd "$MA" && find . -type f -name '*_v0.mp3' | sort | head -100)
for f in "${CHANGED[@]}"; do head -c 2048 /dev/urandom >"$WORK/native/$f"; cp "$WORK/native/$f" "$MA/$f"; done
SONGFS_HOME=$HOME_A "$SONGFS" sync >&2 || NOTE[change_sync]="songfs sync on device a failed"
t0=$(now_ns)
SONGFS_HOME=$HOME_B "$SONGFS" sync >&2 || NOTE[change_sync]="songfs sync on device b failed"
RESULT[change_sync_ms]=$(since_ms "$t0")
RESULT[rss_peak_after_changes]=$(vm_mib "$PID_B" VmHWM)
bad=0
for f in "${CHANGED[@]}"; do cmp -s "$WORK/native/$f" "$MB/$f" || bad=$((bad + 1)); done
[ "$bad" = 0 ] || NOTE[change_sync_bytes]="$bad of 100 changed files read back different on device b"
songfs_unmount "$HOME_A" "$MA"
songfs_unmount "$HOME_B" "$MB"

v() { echo "${RESULT[$1]:-n/a}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
mkdir -p "$OUT_DIR"
{
  echo "# songfs with a library of $FILES files in $FOLDERS folders"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), songfs $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), folder store, median of $RUNS runs for the listings."
  echo
  echo "| Measurement | songfs | native disk | Ratio |"
  echo "|---|---|---|---|"
  echo "| ls -l of the top folder ($FOLDERS folders), ms | $(v songfs_ls_top_ms) | $(v native_ls_top_ms) | $(ratio "$(v songfs_ls_top_ms)" "$(v native_ls_top_ms)") |"
  echo "| ls -l of one song folder ($PER_FOLDER files), ms | $(v songfs_ls_one_ms) | $(v native_ls_one_ms) | $(ratio "$(v songfs_ls_one_ms)" "$(v native_ls_one_ms)") |"
  echo "| find over the whole tree, ms | $(v songfs_find_ms) | $(v native_find_ms) | $(ratio "$(v songfs_find_ms)" "$(v native_find_ms)") |"
  echo
  echo "| Measurement | songfs |"
  echo "|---|---|"
  echo "| Device a: cp -r of the library into the mount, ms | $(v write_tree_ms) |"
  echo "| Device a: the same until unmount (uploads and namespace sent), ms | $(v write_and_upload_ms) |"
  echo "| New device: mount + first sync until the library is listed, ms (target under 60,000) | $(v first_sync_ms) |"
  echo "| Later sync of 100 changed files on the other device, ms | $(v change_sync_ms) |"
  echo "| New device's daemon RSS, peak during its first sync, MiB | $(v rss_peak_first_sync) |"
  echo "| ... peak after the listings, MiB | $(v rss_peak_listing) |"
  echo "| ... resting after the listings, MiB | $(v rss_idle) |"
  echo "| ... peak after the sync of 100 changes, MiB | $(v rss_peak_after_changes) |"
  echo
  for k in "${!NOTE[@]}"; do echo "- $k: ${NOTE[$k]}"; done
} | tee "$OUT_DIR/library.md"
