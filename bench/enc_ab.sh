#!/usr/bin/env bash
# bench/enc_ab.sh BIN...: an A/B of songfs binaries on the encrypted store against the
# unencrypted one (bench/lib.sh's s3s-fs, work folder and cleanup): per binary and store,
# N (default 5) writes of fresh 64 MiB through one device with close -> blob seen in
# s3s-fs's folder, then three new devices' mount -> first file listed (a small library:
# what the key derivation and the first sync cost, not a 5,000-file listing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
start_s3s_fs
DATA=$WORK/data; mkdir -p "$DATA"
echo "probe-pass-$RANDOM$RANDOM" >"$WORK/passphrase"; export SONGFS_PASSPHRASE_FILE=$WORK/passphrase
N=${N:-5}
for bin in "$@"; do
  SONGFS=$bin
  for enc in 0 1; do
    ENCRYPTED=$enc; STORE_PREFIX=p$enc-$(basename $(dirname $bin))$RANDOM
    if [ $enc = 1 ]; then INIT_ARGS=(--encrypt); else INIT_ARGS=(); fi
    home=$(new_device a); m=$WORK/m-$STORE_PREFIX
    songfs_mount "$home" "$m"
    land=(); wr=()
    for ((i = 0; i < N; i++)); do
      head -c $((64 << 20)) /dev/urandom >"$DATA/w64"; watch_landing $((64 << 20))
      wr+=("$(ms_of cp "$DATA/w64" "$m/w64_$i")")
      land+=("$(landed_ms_since "$(now_ns)")"); landing_done
    done
    songfs_unmount "$home" "$m"
    INIT_ARGS=(); lst=()
    for ((i = 0; i < 3; i++)); do
      h=$(new_device c$i); d=$WORK/mc-$STORE_PREFIX-$i; t0=$(now_ns)
      songfs_mount "$h" "$d"; wait_fine 60 test -e "$d/w64_0"; lst+=("$(since_ms "$t0")")
      songfs_unmount "$h" "$d"
    done
    echo "$(basename $(dirname $bin)) enc=$enc write: $(printf '%s\n' "${wr[@]}" | median) [${wr[*]}] landed: $(printf '%s\n' "${land[@]}" | median) [${land[*]}] listed: $(printf '%s\n' "${lst[@]}" | median) [${lst[*]}]"
  done
done
