#!/usr/bin/env bash
# Reproduces issue 15's bimodal first read: the first 64 KiB of a cold 10 MiB file on an
# S3 store (s3s-fs on 127.0.0.1), read by a NEW device (its own empty cache, no chunk
# records), with the page cache dropped before each read. Device a writes six files of
# fresh random bytes and unmounts (uploads done); each run then sets up a new device on
# the same store, mounts it, waits for the six files to arrive from device a's namespace
# and reads each file's first 64 KiB (open + read, timed in-process by rangeget).
# Prints one line per run with all six times (ms), and the median of everything.
#
# Environment: RUNS (default 3), SKIP_BUILD=1, KEEP_WORK=1, S3S_FS, S3S_NODELAY=0 (s3s-fs
# without bench/nodelay.c), TMPDIR,
# SONGFS_BIN / RANGEGET_BIN (compare another build without touching this tree).
set -euo pipefail

RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILES=6

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ -x "$S3S_FS" ] || die "s3s-fs not found: set S3S_FS or run \`cargo install s3s-fs --version 0.14.1 --features binary\`"
if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${SONGFS_BIN:-}${RANGEGET_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --bin songfs --example rangeget >&2)
fi
[ -x "$SONGFS" ] && [ -x "$RANGEGET" ] || die "release binaries missing: run without SKIP_BUILD=1"
[ "$CAN_DROP" = 1 ] || log "cannot drop the page cache (not root): the reads below may come from memory"
start_s3s_fs

HOME_A=$(new_device a) || die "songfs init of device a failed"
songfs_mount "$HOME_A" "$WORK/mnt-a" || die "mounting device a failed"
for ((f = 0; f < FILES; f++)); do head -c $((10 << 20)) /dev/urandom >"$WORK/mnt-a/f$f"; done
songfs_unmount "$HOME_A" "$WORK/mnt-a" # finishes the uploads

all=()
for ((r = 0; r < RUNS; r++)); do
  home=$(new_device "b$r") || die "songfs init of device b$r failed"
  dir=$WORK/mnt-b$r
  songfs_mount "$home" "$dir" || die "mounting device b$r failed"
  wait_for "$WAIT_SECS" test -e "$dir/f$((FILES - 1))" ||
    die "device b$r did not receive device a's files within ${WAIT_SECS}s"
  times=()
  for ((f = 0; f < FILES; f++)); do
    drop_caches
    t=$("$RANGEGET" read "$dir/f$f" --len 65536) || die "reading $dir/f$f failed"
    times+=("$t")
  done
  echo "run $((r + 1)): ${times[*]} ms"
  all+=("${times[@]}")
  songfs_unmount "$home" "$dir"
done
echo "median of all $((RUNS * FILES)): $(printf '%s\n' "${all[@]}" | median) ms, max $(printf '%s\n' "${all[@]}" | sort -g | tail -1) ms"
