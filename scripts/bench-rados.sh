#!/usr/bin/env bash
# RADOS benchmark: fio over NBD through the whole stack (nbdd -> vlmcd ->
# radosd) against fio's rbd engine (librbd in fio) on the same pool and,
# if QEMU's rbd driver is installed, against qemu-nbd over that driver (the
# same NBD client as ours), in the same run: 4 KiB random reads and writes
# at depth 1 and 16, 4 MiB sequential at depth 4. Prints the ratios and
# the CPU time per I/O of each side (scripts/bench-lib.sh): all our peers
# together, or qemu-nbd; fio's own (for the rbd engine: librbd's and
# librados's); and, apart, the OSD's.
#
#   scripts/bench-rados.sh [--short] [CEPH_DIR] [SECONDS]
#
# CEPH_DIR holds a micro cluster (scripts/micro-ceph.sh start CEPH_DIR is
# run if needed; default /tmp/archip-bench-ceph); SECONDS (default 10) is
# the length of each fio job; each figure is the median of ROUNDS
# (default 3) rounds, the sides alternating, so that a slow spell of the
# shared machine or of the OSD hits all. --short: one round of 1 s jobs
# on 128 MiB (under a minute once the cluster runs; a smoke test). Builds with
# -tags ceph (needs librados-dev). LAYOUT=hosted (default), split or both
# (a stack of each, side by side), and the CPU columns, as in bench-nbd.sh.
#
# librbd runs with rbd_cache=false (RBD_CACHE=true to change): with its
# cache librbd acknowledges writes from memory (4 KiB writes at depth 1
# came back in 78 us, less than one OSD round trip), while every write our
# stack acknowledges is in RADOS; QEMU with cache=none opens RBD disks
# without the cache too.
#
# Before issue 13 (2 vCPUs shared with other jobs; 10 s jobs, medians of 3
# rounds, 2026-12-01):
#   load average 6.7 -> 5.3, commit a97978b; ratio: ours / the other;
#   CPU: us per I/O of our peers, or qemu-nbd; fio: fio's own (with rbd:
#   librbd and librados); the OSD apart (ours / rbd / qemu):
#   job                   ours    rbd ratio  qemu ratio   CPU ours qemu   fio ours rbd qemu   OSD
#   4K randwrite qd1      1344   2247  0.60  1641  0.82    420   205        47  134   46    324/263/311
#   4K randread  qd1      1578   3728  0.42  2299  0.69    435   237        48  116   42    155/124/144
#   4K randwrite qd16     2909   4207  0.69  3664  0.79    186    85        25   63   20    226/198/200
#   4K randread  qd16     6807  16929  0.40  3465  1.96    121   169        18   36   30     65/ 40/102
#   4M write qd4 (MiB/s)   612    774  0.79   729  0.84   3249 2477      1064 2140 1046   4054/3869/3003
#   4M read  qd4 (MiB/s)  1189   1573  0.76   708  1.68   2906 2967      1102 1675 1232   1537/1596/1665
#   ours at 4K qd1 read: radosd 191, vlmcd 127, nbdd 112, mapperd+blockerm 6
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
short=0
args=()
for a; do case $a in --short) short=1 ;; *) args+=("$a") ;; esac; done
cephdir=${args[0]:-/tmp/archip-bench-ceph}
secs=${args[1]:-10}
size=512M
if [ $short = 1 ]; then secs=1 size=128M; export ROUNDS=1; fi
conf=$(scripts/micro-ceph.sh start "$cephdir")
cephconf=$conf
pool=archipelago
work=$(mktemp -d /var/tmp/archip-rbench.XXXXXX)
bin=$work/bin
go build -tags ceph -o "$bin/" ./cmd/...
ns=bench-$$
# One stack per layout of ours (LAYOUT, bench-lib.sh), each on namespaces
# of its own.
declare -A cfgs uris procs
for L in $layouts; do
  mkdir -p "$work/$L"
  cfgs[$L]=$work/$L/archipelago.conf
  cat > "${cfgs[$L]}" <<CONF
[ARCHIPELAGO]
HOST_ID = bench
RUN_DIR = $work/$L/run
LOG_DIR = $work/$L/log
[XSEG]
SEGMENT_NAME = rbench-$$-$L
SEGMENT_SIZE = 512
$(peers_conf "$(layout_of "$L")")
[blockerb]
type = rados_blocker
pool = $pool
ceph_conf = $cephconf
namespace = $ns-$L-b
nr_threads = 16
[blockerm]
type = rados_blocker
pool = $pool
ceph_conf = $cephconf
namespace = $ns-$L-m
CONF
done
qpid=""
cleanup() {
  st=$?
  set +e # clean up everything, whatever fails
  if [ $st -ne 0 ]; then
    for f in "$work"/*/log/*.log; do echo "== $f" >&2; tail -3 "$f" >&2; done
  fi
  for L in "${!cfgs[@]}"; do "$bin/archipelago" --config "${cfgs[$L]}" stop -f >/dev/null 2>&1 || true; done
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  rbd -c "$cephconf" -p "$pool" rm --no-progress "$ns-rbd" >/dev/null 2>&1 || true
  rbd -c "$cephconf" -p "$pool" rm --no-progress "$ns-qnbd" >/dev/null 2>&1 || true
  # The micro cluster keeps objects in memory: remove ours.
  for L in "${!cfgs[@]}"; do
    for n in "$ns-$L-b" "$ns-$L-m" "$ns-$L-b.locks" "$ns-$L-m.locks"; do
      rados -c "$cephconf" -p "$pool" -N "$n" ls 2>/dev/null | while read -r o; do rados -c "$cephconf" -p "$pool" -N "$n" rm "$o"; done
    done
  done
  rm -rf "$work"
}
trap cleanup EXIT
for L in $layouts; do
  "$bin/archipelago" --config "${cfgs[$L]}" start >/dev/null
  "$bin/vlmc" --config "${cfgs[$L]}" create benchvol --size $size
  # This host keeps the lock (as after a VM's first write): cached mappings.
  "$bin/vlmc" --config "${cfgs[$L]}" open benchvol
  uris[$L]="nbd+unix:///benchvol?socket=$work/$L/run/nbd.sock"
done
rbd -c "$cephconf" -p "$pool" create --size $size "$ns-rbd"
# fio's rbd engine reads the configuration CEPH_CONF names: the cluster's,
# with librbd's cache set.
sed "s/^\[client\]\$/[client]\nrbd cache = ${RBD_CACHE:-false}/" "$cephconf" > "$work/ceph-rbd.conf"
grep -q '^rbd cache' "$work/ceph-rbd.conf" || printf '[client]\nrbd cache = %s\n' "${RBD_CACHE:-false}" >> "$work/ceph-rbd.conf"
rbdargs=(--ioengine=rbd --clientname=admin --pool="$pool" --rbdname="$ns-rbd")
# Fill all first: the figures are of steady-state I/O, not of first writes
# (which allocate objects, and on our side also update the map).
CEPH_CONF=$work/ceph-rbd.conf fio --name=fill "${rbdargs[@]}" --rw=write --bs=4M --iodepth=16 --size=$size >/dev/null
for L in $layouts; do
  fio --name=fill --ioengine=nbd --uri="${uris[$L]}" --rw=write --bs=4M --iodepth=16 --size=$size >/dev/null
done
# A second baseline with the same client as ours: qemu-nbd serving an RBD
# image through QEMU's rbd driver (librbd, cache=none), as a QEMU user
# would reach RBD over NBD. Skipped without the driver (qemu-block-extra).
sides="$layouts rbd"
if qemu-img --help 2>/dev/null | grep -q "Supported formats:.* rbd"; then
  rbd -c "$cephconf" -p "$pool" create --size $size "$ns-qnbd"
  qemu-nbd -f raw --cache=none -k "$work/qnbd.sock" -t "rbd:$pool/$ns-qnbd:conf=$cephconf" >/dev/null 2>&1 &
  qpid=$!
  for _ in $(seq 100); do [ -S "$work/qnbd.sock" ] && break; sleep 0.1; done
  qemu="nbd+unix:///?socket=$work/qnbd.sock"
  fio --name=fill --ioengine=nbd --uri="$qemu" --rw=write --bs=4M --iodepth=16 --size=$size >/dev/null
  sides="$layouts rbd qemu"
fi

extra="osd=$(cat "$(dirname "$cephconf")/run/osd.0.pid")"
for L in $layouts; do procs[$L]=$(peers "$work/$L/run"); done
common() { echo --name="$1" --rw="$1" --bs="$2" --iodepth="$3" --size=$size --time_based --runtime="$secs"; }
ours_job() { local L=$1; shift; measure "${procs[$L]}" "$work" --ioengine=nbd --uri="${uris[$L]}" $(common "$@"); }
define_sides ours_job
side_rbd() { CEPH_CONF=$work/ceph-rbd.conf measure "" "$work" "${rbdargs[@]}" $(common "$@"); }
side_qemu() { measure "qemu-nbd=$qpid" "$work" --ioengine=nbd --uri="$qemu" $(common "$@"); }

echo "load average: $(load); LAYOUT=$LAYOUT"
compare_header "$sides"
for spec in "randwrite 4k 1" "randread 4k 1" "randwrite 4k 16" "randread 4k 16" "write 4M 4" "read 4M 4"; do
  compare "$sides" $spec
done
echo "load average: $(load)"
