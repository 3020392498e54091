#!/usr/bin/env bash
# Benchmark: a point release installed by delta versus in full.
#
# v1 is the image bench/flash.sh builds (the contents of /usr as a tar stream, repeated as
# needed, plus zeros for free space, SIZE_MIB in all). v2 is derived from it:
#   * 1 MiB of new data inserted at 8 MiB, so everything after it shifts (v2 is cut back
#     to the same size at the end, inside the zero padding);
#   * PLACES (default 32) regions of 640 KiB spread over the data rewritten (letters
#     shifted by one: new bytes, as compressible as the rest), about 2% of the image.
# Both are packed with `osroll image pack`, v2 is served on 127.0.0.1 by serve_image
# (honours Range, counts the body bytes it sends), and v2 is installed into a fresh
# sparse slot with v1 as the seed (the running slot), alternating:
#   delta:  osroll flash URL --checksum ... --seed v1.img --index-checksum ... --to SLOT
#           (the seed is chunked and hashed first)
#   delta+: the same with --seed-index v1.img.zst.index.json (the seed's chunks known
#           from the index v1 was packed with; each copied chunk is still hashed)
#   full:   osroll flash URL --checksum ... --to SLOT
# RUNS times each (default 3). Prints the bytes the delta fetched as a share of the full
# install's, the delta's time as a ratio of the full install's (medians), and the peak
# RSS of each. Nothing is asserted: this is a measurement, not a test.
#
# Environment: CARGO_TARGET_DIR (default target), BENCH_DIR (default a temp dir, removed
# afterwards), SIZE_MIB (default 1024), RUNS (default 3), PLACES (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
PLACES=${PLACES:-32}
for tool in dd /usr/bin/time sha256sum tar tr curl; do
    command -v "$tool" >/dev/null || { echo "bench/delta.sh needs $tool" >&2; exit 1; }
done

echo "== building release binaries"
cargo build --release -q -p osroll
# serve_image uses std only: build it with rustc alone (as a cargo example it would
# rebuild the agent's dev-dependencies in release).
mkdir -p "$TARGET/release/examples"
rustc --edition 2024 -O crates/agent/examples/serve_image.rs -o "$TARGET/release/examples/serve_image"
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

V1="$WORK/v1.img"
V2="$WORK/v2.img"
SLOT="$WORK/slot-b.img"
BYTES=$((SIZE_MIB * 1024 * 1024))
DATA=$((BYTES * 3 / 4))
MIB=$((1024 * 1024))
if [ ! -s "$V2" ]; then
    echo "== generating v1 (${SIZE_MIB} MiB) and v2"
    { { while tar -cf - /usr 2>/dev/null; do :; done | head -c "$DATA"; } || true
      head -c $((BYTES - DATA)) /dev/zero; } > "$V1"
    { head -c $((8 * MIB)) "$V1"
      head -c "$MIB" /dev/urandom
      tail -c +$((8 * MIB + 1)) "$V1"; } | head -c "$BYTES" > "$V2" || true  # tail ends on SIGPIPE
    REGION=$((640 * 1024))
    STEP=$(((DATA - 16 * MIB) / PLACES))
    for k in $(seq 0 $((PLACES - 1))); do
        AT=$((16 * MIB + k * STEP))
        dd if="$V2" bs=64K iflag=skip_bytes,count_bytes skip="$AT" count="$REGION" status=none |
            tr 'a-yA-Y' 'b-zB-Z' |
            dd of="$V2" bs=64K oflag=seek_bytes seek="$AT" conv=notrunc status=none
    done
    CHANGED=$(cmp -l "$V1" "$V2" 2>/dev/null | wc -l || true)
    echo "   bytes differing at the same offset: $CHANGED (the insertion shifts the rest)"
fi
pack() { "$OSROLL" image pack "$1" -o "$1.zst"; }
echo "== packing"
/usr/bin/time -f "   v1 packed in %e s, peak RSS %M KiB" "$OSROLL" image pack "$V1" -o "$V1.zst" > "$WORK/v1.pack"
/usr/bin/time -f "   v2 packed in %e s, peak RSS %M KiB" "$OSROLL" image pack "$V2" -o "$V2.zst" > "$WORK/v2.pack"
SUM=$(sed -n 's/^checksum: //p' "$WORK/v2.pack")
ISUM=$(sed -n 's/^  checksum: //p' "$WORK/v2.pack")
echo "   v2: $(head -1 "$WORK/v2.pack")"

cat "$V2.zst" "$V1" > /dev/null  # both sides start from a warm page cache
"$SERVE" "$V2.zst" > "$WORK/server.out" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
ADDR=$(sed -n 's/listening on //p' "$WORK/server.out")
URL="http://$ADDR/v2.img.zst"
sent() { curl -s "http://$ADDR/_sent"; }

fresh_slot() { rm -f "$SLOT"; truncate -s "$BYTES" "$SLOT"; sync; }

# Appends "<seconds> <max RSS KiB> <bytes sent>" to $1; the rest is the command.
measure() {
    local runs=$1 before after
    shift
    fresh_slot
    before=$(sent)
    /usr/bin/time -f "%e %M" -o "$WORK/time.out" "$@" > "$WORK/cmd.out" 2> "$WORK/cmd.err" || { cat "$WORK/cmd.err" >&2; exit 1; }
    after=$(sent)
    cmp -s -n "$BYTES" "$SLOT" "$V2" || { echo "slot does not hold v2" >&2; exit 1; }
    echo "$(cat "$WORK/time.out") $((after - before))" >> "$WORK/$runs.runs"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { cut -d' ' -f"$2" "$WORK/$1.runs"; }
: > "$WORK/delta.runs"
: > "$WORK/deltaidx.runs"
: > "$WORK/full.runs"
for i in $(seq "$RUNS"); do
    measure delta "$OSROLL" flash "$URL" --checksum "$SUM" --size "$BYTES" --seed "$V1" \
        --index-checksum "$ISUM" --to "$SLOT" --quiet
    grep -q "by delta" "$WORK/cmd.out" || { echo "the delta install fell back:" >&2; cat "$WORK/cmd.err" >&2; exit 1; }
    [ "$i" = 1 ] && echo "   $(cat "$WORK/cmd.out")"
    measure deltaidx "$OSROLL" flash "$URL" --checksum "$SUM" --size "$BYTES" --seed "$V1" \
        --seed-index "$V1.zst.index.json" --index-checksum "$ISUM" --to "$SLOT" --quiet
    grep -q "by delta" "$WORK/cmd.out" || { echo "the delta install fell back:" >&2; cat "$WORK/cmd.err" >&2; exit 1; }
    measure full "$OSROLL" flash "$URL" --checksum "$SUM" --size "$BYTES" --to "$SLOT" --quiet
    echo "   run $i: delta $(col delta 1 | tail -1)s $(col delta 3 | tail -1) bytes, delta+index $(col deltaidx 1 | tail -1)s, full $(col full 1 | tail -1)s $(col full 3 | tail -1) bytes"
done

echo "== results (median of $RUNS runs, ${SIZE_MIB} MiB image, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
for side in delta deltaidx full; do
    awk -v n="$side" -v s="$(col "$side" 1 | median)" -v r="$(col "$side" 2 | sort -n | tail -1)" \
        -v b="$(col "$side" 3 | median)" \
        'BEGIN { printf "%-8s %7.2f s  %12d bytes fetched  peak RSS %6.1f MiB\n", n, s, b, r / 1024 }'
done
for side in delta deltaidx; do
    awk -v n="$side" -v d="$(col "$side" 3 | median)" -v f="$(col full 3 | median)" \
        -v ds="$(col "$side" 1 | median)" -v fs="$(col full 1 | median)" \
        'BEGIN { printf "%-8s fetched %.1f%% of the full install'"'"'s bytes; time / full time = %.2f\n", n, 100 * d / f, ds / fs }'
done
