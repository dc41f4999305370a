#!/usr/bin/env bash
# The ceiling: fio (ioengine=nbd) against Archipelago's block endpoint with
# every object on tmpfs, and against `nbdkit memory` (one process, one hop,
# no storage: what the NBD client and the kernel allow on this machine),
# over Unix sockets, in the same run; prints each ratio and the CPU time per
# I/O of each side (scripts/bench-lib.sh).
#
#   scripts/bench-ceiling.sh [--short] [SECONDS]
#
# SECONDS (default 10) is the length of each fio job; each figure is the
# median of ROUNDS (default 3) rounds, ours and nbdkit's alternating.
# --short: one round of 1 s jobs on 128 MiB (under a minute; a smoke test).
# Needs fio, nbdcopy and nbdkit (apt-get install nbdkit). The whole work
# directory (programs, segment, data, maps) is under /dev/shm. LAYOUT=hosted
# (default), split or both, and the CPU columns, as in bench-nbd.sh.
#
# Before issue 13 (2 vCPUs shared with other jobs; 10 s jobs, medians of 3
# rounds, 2026-12-01):
#   load average 7.6 -> 4.8, commit a97978b; IOPS, then CPU us per I/O:
#   4K job          ours  nbdkit ratio   CPU ours nbdkit   fio ours nbdkit
#   randread  qd1   6353   19845  0.32      134.1   28.8       23.8   23.4
#   randwrite qd1   6580   23921  0.28      133.6   22.8       22.6   16.2
#   randread  qd32 25346   56513  0.45       37.0   11.4       11.3   10.9
#   randwrite qd32 40988  122141  0.34       27.9    6.9        8.0    6.8
#   ours at qd1: nbdd 65, vlmcd 35, blockerb 34, mapperd+blockerm 1 us/I/O
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
short=0
args=()
for a; do case $a in --short) short=1 ;; *) args+=("$a") ;; esac; done
secs=${args[0]:-10}
size=512M
if [ $short = 1 ]; then secs=1 size=128M; export ROUNDS=1; fi
command -v nbdkit >/dev/null || { echo "bench-ceiling: needs nbdkit (apt-get install nbdkit)" >&2; exit 1; }
work=$(mktemp -d /dev/shm/archip-ceiling.XXXXXX)
kpid=
cleanup() {
  [ -n "$kpid" ] && kill "$kpid" 2>/dev/null || true
  stack_stop
  rm -rf "$work"
}
trap cleanup EXIT

declare -A uris procs
for L in $layouts; do
  stack_start "$work/$L" "$work/$L" "$(layout_of "$L")"
  "$bin/vlmc" --config "$conf" create benchvol --size $size
  # This host keeps the lock (as after a VM's first write): cached mappings.
  "$bin/vlmc" --config "$conf" open benchvol
  uris[$L]="nbd+unix:///benchvol?socket=$work/$L/run/nbd.sock"
done
nbdkit -f -U "$work/nbdkit.sock" memory size=$size &
kpid=$!
theirs="nbd+unix:///?socket=$work/nbdkit.sock"
for _ in $(seq 50); do [ -S "$work/nbdkit.sock" ] && break; sleep 0.1; done

# Fill both so that reads find data, not holes.
nbd_fill "$theirs"

define_sides nbd_ours
side_nbdkit() { nbd_job "nbdkit=$kpid" "$theirs" "$@"; }

echo "load average: $(load); LAYOUT=$LAYOUT"
compare_header "$layouts nbdkit"
for spec in "randread 4k 1" "randwrite 4k 1" "randread 4k 32" "randwrite 4k 32"; do
  compare "$layouts nbdkit" $spec
done
echo "load average: $(load)"
