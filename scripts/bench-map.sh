#!/usr/bin/env bash
# The mapped device: fio (ioengine=libaio, or ENGINE=io_uring) with direct
# I/O on the /dev/loopN of `vlmc map` (a loop device with direct I/O over a
# FUSE file served by the map daemon, which sends volume requests to vlmcd,
# mapdev/doc.go) against a loop device over a plain file on the same
# filesystem (`losetup -f --show FILE`: the limit of a loop device here),
# in the same run; prints each ratio and the CPU time per I/O of each side
# (scripts/bench-lib.sh: the map daemon and the peers on ours; on the plain
# loop device the work is the kernel's, in no process of ours, so that side
# counts none).
#
#   scripts/bench-map.sh [--short] [DIR] [SECONDS]
#
# DIR (default /var/tmp) holds both devices' data; SECONDS (default 10) is
# the length of each fio job; each figure is the median of ROUNDS (default
# 3) rounds, ours and the plain loop device's alternating. --short: one
# round of 1 s jobs on 128 MiB (under a minute; a smoke test). Needs root,
# /dev/fuse, loop devices and fio. Unmaps and detaches what it made on exit,
# also on error. LAYOUT=hosted (default), split or both (a stack and a
# mapped device of each, side by side), and the CPU columns, as in
# bench-nbd.sh; the map daemon is its own process in every layout.
#
# Before issue 13 (2 vCPUs shared with other jobs; 10 s jobs, medians of 3
# rounds, 2026-12-01):
#   load average 4.7 -> 6.4, commit a97978b, libaio; CPU us per I/O of ours
#   (map daemon + peers; the plain loop device's work is the kernel's):
#   job                map   loop ratio   CPU ours   fio map loop
#   4K randread  qd1   4568  29391  0.16      183.4      25.6  13.1  (IOPS)
#   4K randwrite qd1   3933  13919  0.28      236.7      28.7  23.1
#   4K randread  qd32 20535 178310  0.12       54.7      10.2   4.3
#   4K randwrite qd32 12155  49975  0.24       88.5      11.5   6.6
#   1M read qd8        1666   9112  0.18      738        64.5  46.5  (MiB/s)
#   1M write qd8       1220   4703  0.26      913       124.0  68.6
#   ours at 4K qd1 read: map daemon 81, vlmcd 50, blockerb 50 us/I/O
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
short=0
args=()
for a; do case $a in --short) short=1 ;; *) args+=("$a") ;; esac; done
base=${args[0]:-/var/tmp}
secs=${args[1]:-10}
engine=${ENGINE:-libaio}
size=1G
if [ $short = 1 ]; then secs=1 size=128M; export ROUNDS=1; fi
work=$(mktemp -d "$base/archip-bmap.XXXXXX")
plain=""
declare -A devs confs procs
cleanup() {
  set +e
  for L in "${!devs[@]}"; do "$bin/vlmc" --config "${confs[$L]}" unmap "${devs[$L]}" >/dev/null; done
  [ -n "$plain" ] && losetup -d "$plain"
  stack_stop
  rm -rf "$work"
}
trap cleanup EXIT

# Our sides: "map" (LAYOUT hosted or split), or "hosted" and "split".
sides=$layouts
[ "$LAYOUT" = both ] || sides=map
export OURS=$sides
for L in $sides; do
  stack_start "$work/$L" "$work/$L" "$(layout_of "$L")"
  confs[$L]=$conf
  "$bin/vlmc" --config "$conf" create benchvol --size $size
  # This host keeps the lock (as after the first write): cached mappings.
  "$bin/vlmc" --config "$conf" open benchvol
  devs[$L]=$("$bin/vlmc" --config "$conf" map benchvol)
done
truncate -s $size "$work/plain.img"
plain=$(losetup -f --show "$work/plain.img")

# Fill all so that reads find data, not holes.
for d in "${devs[@]}" "$plain"; do
  fio --name=fill --filename="$d" --ioengine="$engine" --direct=1 --rw=write --bs=1M --iodepth=8 \
    --size=$size >/dev/null 2>"$work/fio.err" || { cat "$work/fio.err" >&2; exit 1; }
done

for L in $sides; do
  procs[$L]="$(peers "$work/$L/run") map=$(python3 -c 'import glob,json,sys; print(json.load(open(glob.glob(sys.argv[1]+"/run/mapped/*.json")[0]))["pid"])' "$work/$L")"
done
job() { # PROCS DEVICE RW BS DEPTH
  measure "$1" "$work" --name="$3" --filename="$2" --ioengine="$engine" --direct=1 --rw="$3" --bs="$4" \
    --iodepth="$5" --size=$size --time_based --runtime="$secs"
}
ours_job() { local L=$1; shift; job "${procs[$L]}" "${devs[$L]}" "$@"; }
layouts=$sides define_sides ours_job
side_loop() { job "" "$plain" "$@"; }

echo "load average: $(load); LAYOUT=$LAYOUT; ours ${devs[*]} (vlmc map), plain $plain ($work/plain.img), fio $engine"
compare_header "$sides loop"
for spec in "randread 4k 1" "randwrite 4k 1" "randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8"; do
  compare "$sides loop" $spec
done
echo "load average: $(load)"
