#!/usr/bin/env bash
# End-to-end NBD benchmark: fio (ioengine=nbd) against Archipelago's block
# endpoint (file backend) and against qemu-nbd serving a raw file on the same
# filesystem, over Unix sockets, in the same run; prints each ratio and the
# CPU time per I/O of each side.
#
#   scripts/bench-nbd.sh [--short] [DIR] [SECONDS]
#
# DIR (default /var/tmp) holds both backends' data; SECONDS (default 10) is
# the length of each fio job; each figure is the median of ROUNDS (default
# 3) rounds, ours and qemu-nbd's alternating, so that a slow spell of the
# shared machine hits both. --short: one round of 1 s jobs on 128 MiB (well
# under a minute; a smoke test of the script, not a measurement). Needs fio,
# qemu-utils (qemu-nbd) and nbdcopy.
#
# LAYOUT=hosted (the default: every role in one archipelagod), split (one
# program per role, as before issue 13) or both (one stack of each, side by
# side: the columns hosted and split, and the ratio hosted/split).
#
# CPU us/I/O (scripts/bench-lib.sh): the CPU time (utime+stime) of all our
# processes together (nbdd, vlmcd, mapperd, blockerb, blockerm; hosted: the
# one archipelagod, whose CPU cannot be split per role) or of qemu-nbd, per
# I/O of the run; fio's own apart; below each job the median per process.
# docs/datapath.md shows where that time goes.
#
# Before issue 13 (commit a97978b; 2 vCPUs shared with other jobs, load
# average 4.7 -> 8.4; 10 s jobs, medians of 3 rounds, 2026-12-01):
# job                 ours   qemu ratio   CPU us/I/O ours qemu   fio ours qemu
# 4K randread  qd1    5930   9995  0.59             132    63        23   26
# 4K randwrite qd1    4388   9355  0.47             157    49        24   15
# 4K randread  qd32  18367  21494  0.85              37    23        10   10
# 4K randwrite qd32  11140  19667  0.57              63    35        13   11
# 1M read  qd8 MiB/s  1108    613  1.81             541   728       237  292
# 1M write qd8 MiB/s  1060    645  1.64             602   729       214  293
# ours at 4K qd1 read: nbdd 64, vlmcd 36, blockerb 30, mapperd+blockerm 1
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
short=0
args=()
for a; do case $a in --short) short=1 ;; *) args+=("$a") ;; esac; done
base=${args[0]:-/var/tmp}
secs=${args[1]:-10}
size=1G
if [ $short = 1 ]; then secs=1 size=128M; export ROUNDS=1; fi
work=$(mktemp -d "$base/archip-bench.XXXXXX")
qpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  stack_stop
  rm -rf "$work"
}
trap cleanup EXIT

declare -A uris procs
for L in $layouts; do
  stack_start "$work/$L" "$work/$L" "$(layout_of "$L")"
  "$bin/vlmc" --config "$conf" create benchvol --size $size
  # This host keeps the volume's lock, as it does once a VM's connection
  # has written: vlmcd then caches the mappings and reads skip the
  # mapper. A connection that has only read does not take the lock, and
  # each of its reads asks mapperd, which reads the map from blockerm
  # (UNLOCKED=1 measures that: 4K reads at ~0.1x of qemu-nbd).
  [ "${UNLOCKED:-0}" = 1 ] || "$bin/vlmc" --config "$conf" open benchvol
  uris[$L]="nbd+unix:///benchvol?socket=$work/$L/run/nbd.sock"
done
truncate -s $size "$work/qemu.img"
qemu-nbd -t -f raw -k "$work/qemu.sock" --shared=16 "$work/qemu.img" &
qpid=$!
theirs="nbd+unix:///?socket=$work/qemu.sock"
for _ in $(seq 50); do [ -S "$work/qemu.sock" ] && break; sleep 0.1; done

# Fill both with data so that reads hit storage, not holes.
nbd_fill "$theirs"

define_sides nbd_ours
side_qemu() { nbd_job "qemu-nbd=$qpid" "$theirs" "$@"; }

echo "load average: $(load); LAYOUT=$LAYOUT"
compare_header "$layouts qemu"
for spec in "randread 4k 1" "randwrite 4k 1" "randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8"; do
  compare "$layouts qemu" $spec
done
echo "load average: $(load)"
