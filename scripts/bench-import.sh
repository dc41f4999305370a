#!/usr/bin/env bash
# Import/export benchmark: `vlmc import` of a raw image against `qemu-img
# convert -n -O raw FILE nbd+unix:///VOL?socket=...` into an existing
# volume of the same size through our nbdd, and `vlmc export` against
# `qemu-img convert -O raw nbd+unix:///VOL?... FILE`, alternately, in the
# same run, on one stack (file backend) started on a temporary directory;
# prints the medians, the spread (min-max) and the ratios ours/qemu-img
# (speed: > 1 means vlmc is faster).
#
#   scripts/bench-import.sh [DIR] [ROUNDS] [SIZE]
#   scripts/bench-import.sh --short [DIR]     # 64M, 1 round: checks that it works
#
# DIR (default /var/tmp) holds the stack's data and the images; ROUNDS
# (default 5) alternating rounds; SIZE (default 1G) of the raw image, of
# which 30% is random data in runs of 256 KiB to 8 MiB at random places,
# the rest holes. Each round imports into a fresh volume (qemu-img's is
# created before its clock starts) and exports to a fresh file; the
# copies are compared with the image once. ARCHIPELAGO_BIN=DIR uses the
# programs built there instead of building them. Needs qemu-img, python3.
#
# Measured with `scripts/bench-import.sh /var/tmp 5` (1 GiB image, 30%
# data; 2 cores shared with other work, load average 13-15; ext4 on
# virtio), medians of 5 rounds (min-max), speed = qemu-img's time / ours:
#   import  1.55 s (0.90-2.08)  vs qemu-img 3.69 s (2.82-4.22)   2.38x
#   export  1.68 s (0.81-3.08)  vs qemu-img 1.98 s (1.43-4.60)   1.18x
# and in a second run:
#   import  1.89 s (1.26-2.65)  vs qemu-img 3.55 s (3.37-4.08)   1.88x
#   export  0.80 s (0.70-1.45)  vs qemu-img 2.40 s (1.22-2.97)   2.99x
# About 40% of an import is its last flush (the data blockers' fdatasync
# of the ~80 objects written); qemu-img's ends with the same flush
# through NBD. The exported file uses 313 MiB of disk for 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
short=
if [ "${1:-}" = --short ]; then
  short=1; shift
fi
base=${1:-/var/tmp}
rounds=${2:-5}
size=${3:-1G}
if [ -n "$short" ]; then rounds=1; size=64M; fi
work=$(mktemp -d "$base/archip-bench-import.XXXXXX")
if [ -n "${ARCHIPELAGO_BIN:-}" ]; then
  bin=$ARCHIPELAGO_BIN
else
  bin=$work/bin
  go build -o "$bin/" ./cmd/...
fi
conf=$work/archipelago.conf
seg=bench-import-$$
cat > "$conf" <<CONF
[ARCHIPELAGO]
HOST_ID = bench
RUN_DIR = $work/run
LOG_DIR = $work/log
[XSEG]
SEGMENT_NAME = $seg
SEGMENT_SIZE = 512
[blockerb]
archip_dir = $work/data
nr_threads = 16
[blockerm]
archip_dir = $work/maps
CONF
cleanup() {
  "$bin/archipelago" --config "$conf" stop -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
vlmc() { "$bin/vlmc" --config "$conf" "$@"; }

"$bin/archipelago" --config "$conf" start >/dev/null
sock=$work/run/nbd.sock
img=$work/image.raw
python3 - "$img" "$size" <<'PY'
import os, random, sys
path, size = sys.argv[1], sys.argv[2]
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
n = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
rnd = random.Random(12)
grain = 64 << 10
covered = bytearray(n // grain)
want = int(len(covered) * 0.30)
have = 0
with open(path, "wb") as f:
    f.truncate(n)
    while have < want:
        length = rnd.randint(4, 128) * grain          # 256 KiB .. 8 MiB
        off = rnd.randrange(0, n - length) // grain * grain
        f.seek(off)
        f.write(os.urandom(length))
        for g in range(off // grain, (off + length) // grain):
            if not covered[g]:
                covered[g] = 1
                have += 1
print("image: %d bytes, %d%% data" % (n, 100 * have // len(covered)), file=sys.stderr)
PY
bytes=$(stat -c %s "$img")

now() { date +%s.%N; }
timed() { # command... -> seconds on stdout
  local t0 t1
  t0=$(now)
  "$@" >/dev/null
  t1=$(now)
  python3 -c "print('%.3f' % ($t1 - $t0))"
}
ours_import() { vlmc remove imp >/dev/null 2>&1 || true; timed vlmc import "$img" imp; }
qemu_import() {
  vlmc remove qimp >/dev/null 2>&1 || true
  vlmc create qimp --size "${bytes}B"
  timed qemu-img convert -n -O raw "$img" "nbd+unix:///qimp?socket=$sock"
}
ours_export() { rm -f "$work/ours.raw"; timed vlmc export imp "$work/ours.raw"; }
qemu_export() { rm -f "$work/qemu.raw"; timed qemu-img convert -O raw "nbd+unix:///imp?socket=$sock" "$work/qemu.raw"; }

ti=() qi=() te=() qe=()
for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    ti+=("$(ours_import)"); qi+=("$(qemu_import)")
    te+=("$(ours_export)"); qe+=("$(qemu_export)")
  else
    qi+=("$(qemu_import)"); ti+=("$(ours_import)")
    qe+=("$(qemu_export)"); te+=("$(ours_export)")
  fi
  echo "round $r: import ${ti[-1]} s vs qemu-img ${qi[-1]} s; export ${te[-1]} s vs qemu-img ${qe[-1]} s" >&2
done
# The copies are right.
cmp "$img" "$work/ours.raw"
cmp "$img" "$work/qemu.raw"
qemu-img compare -q "$img" "nbd+unix:///imp?socket=$sock"
qemu-img compare -q "$img" "nbd+unix:///qimp?socket=$sock"
echo "export sparse: $(du -k "$work/ours.raw" | cut -f1) KiB used for $bytes bytes" >&2

python3 - "$bytes" "${ti[*]}" "${qi[*]}" "${te[*]}" "${qe[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
ti, qi, te, qe = ([float(x) for x in a.split()] for a in sys.argv[2:6])
def row(name, ours, theirs):
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print("%-8s %8.0f MiB/s (%.2f s, %.2f-%.2f) %8.0f MiB/s (%.2f s, %.2f-%.2f) %7.2fx" % (
        name, n / 2**20 / mo, mo, min(ours), max(ours), n / 2**20 / mt, mt, min(theirs), max(theirs), mt / mo))
print("%-8s %31s %31s %8s" % ("", "vlmc (median s, min-max)", "qemu-img convert (NBD)", "speed"))
row("import", ti, qi)
row("export", te, qe)
PY
