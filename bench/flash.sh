#!/usr/bin/env bash
# Benchmark: `osroll flash` versus the manual pipeline it replaces.
#
# Builds release binaries, generates a 1 GiB image (the contents of /usr as a tar
# stream, repeated as needed, plus zeros for free space: about what a root filesystem
# image holds), compresses it with zstd, serves it on 127.0.0.1, and installs it into a
# file-backed slot three ways:
#
#   osroll flash http://127.0.0.1:PORT/img.zst --checksum sha256:... --size N --to SLOT
#     (download + sha256 + zstd decode + O_DIRECT writes + fsync + read-back verify;
#     runs of zeros of 1 MiB or more are zeroed with FALLOC_FL_ZERO_RANGE, not written)
#   the same with --write-zeros (every byte written as data, as dd does)
#   zstd -dc IMG | dd of=SLOT bs=4M oflag=direct
#     (local file, no download, no verification)
#
# Prints MB/s (decoded bytes per second) and peak RSS for each, and the ratio of each
# flash variant to the pipeline (flash MB/s / pipeline MB/s). The three alternate, RUNS
# times each (default 3), each into a fresh sparse slot; the median is reported. Nothing
# is asserted: this is a measurement, not a test.
#
# Environment: CARGO_TARGET_DIR (default target), BENCH_DIR (default a temp dir, removed
# afterwards), SIZE_MIB (default 1024), RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
for tool in zstd dd /usr/bin/time sha256sum tar; do
    command -v "$tool" >/dev/null || { echo "bench/flash.sh needs $tool" >&2; exit 1; }
done

echo "== building release binaries"
cargo build --release -q -p osroll
cargo build --release -q -p osroll-agent --example serve_image
OSROLL="$TARGET/release/osroll"
SERVE="$TARGET/release/examples/serve_image"

WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

IMG="$WORK/rootfs.img"
ZST="$WORK/rootfs.img.zst"
SLOT="$WORK/slot-b.img"
BYTES=$((SIZE_MIB * 1024 * 1024))
if [ ! -s "$ZST" ]; then
    echo "== generating a ${SIZE_MIB} MiB image"
    DATA=$((BYTES * 3 / 4))
    gen() {
        # tar is killed by SIGPIPE once head has enough, which ends the loop.
        { while tar -cf - /usr 2>/dev/null; do :; done | head -c "$DATA"; } || true
        head -c $((BYTES - DATA)) /dev/zero
    }
    gen > "$IMG"
    zstd -q -3 -T0 -f "$IMG" -o "$ZST"
    rm -f "$IMG"
fi
ZBYTES=$(stat -c %s "$ZST")
SUM=$(sha256sum "$ZST" | cut -d' ' -f1)
echo "   image: $BYTES bytes, zstd: $ZBYTES bytes"
cat "$ZST" > /dev/null  # both sides start from a warm page cache

"$SERVE" "$ZST" > "$WORK/server.out" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
ADDR=$(sed -n 's/listening on //p' "$WORK/server.out")
URL="http://$ADDR/rootfs.img.zst"

fresh_slot() { rm -f "$SLOT"; truncate -s "$BYTES" "$SLOT"; sync; }

# Prints "<seconds> <max RSS KiB>".
measure() {
    /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" > /dev/null 2> "$WORK/cmd.err" || { cat "$WORK/cmd.err" >&2; exit 1; }
    cat "$WORK/time.out"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$WORK/flash.runs"
: > "$WORK/flashw.runs"
: > "$WORK/pipe.runs"
last() { tail -1 "$WORK/$1.runs" | cut -d' ' -f1; }
for i in $(seq "$RUNS"); do
    fresh_slot
    measure "$OSROLL" flash "$URL" --checksum "sha256:$SUM" --size "$BYTES" --to "$SLOT" --quiet >> "$WORK/flash.runs"
    fresh_slot
    measure "$OSROLL" flash "$URL" --checksum "sha256:$SUM" --size "$BYTES" --to "$SLOT" --quiet --write-zeros >> "$WORK/flashw.runs"
    fresh_slot
    measure sh -c "zstd -dc '$ZST' | dd of='$SLOT' bs=4M oflag=direct status=none" >> "$WORK/pipe.runs"
    echo "   run $i: flash $(last flash)s, flash --write-zeros $(last flashw)s, pipeline $(last pipe)s"
done

report() {
    local name=$1 runs=$2 secs rss
    secs=$(cut -d' ' -f1 "$runs" | median)
    rss=$(cut -d' ' -f2 "$runs" | sort -n | tail -1)
    awk -v n="$name" -v s="$secs" -v r="$rss" -v b="$BYTES" \
        'BEGIN { printf "%-40s %8.1f MB/s  %6.2f s  peak RSS %6.1f MiB\n", n, b / s / 1e6, s, r / 1024 }'
}
echo "== results (median of $RUNS runs, ${SIZE_MIB} MiB decoded, $(nproc) CPUs)"
report "osroll flash (download+verify)" "$WORK/flash.runs"
report "osroll flash --write-zeros" "$WORK/flashw.runs"
report "zstd -dc | dd bs=4M oflag=direct" "$WORK/pipe.runs"
P=$(cut -d' ' -f1 "$WORK/pipe.runs" | median)
for side in flash:"osroll flash" flashw:"osroll flash --write-zeros"; do
    F=$(cut -d' ' -f1 "$WORK/${side%%:*}.runs" | median)
    awk -v n="${side#*:}" -v f="$F" -v p="$P" \
        'BEGIN { printf "ratio %-28s (MB/s against the pipeline): %.2f\n", n, p / f }'
done
