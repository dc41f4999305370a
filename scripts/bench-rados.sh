#!/usr/bin/env bash
# RADOS benchmark: 4 KiB random and 4 MiB sequential writes and reads
# through the whole stack (fio over NBD -> nbdd -> vlmcd -> radosd) against
# `rbd bench` on the same pool, same I/O size, 16 threads/in flight, in the
# same run; prints the ratios.
#
#   scripts/bench-rados.sh [CEPH_DIR] [MiB]
#
# CEPH_DIR holds a micro cluster (scripts/micro-ceph.sh start CEPH_DIR is
# run if needed; default /tmp/archip-bench-ceph); MiB is the data each 4 KiB
# job moves (default 256; 4 MiB jobs move 16 times that). Each figure is
# the median of ROUNDS (default 3) alternating runs. The last column is
# CPU time per I/O (microseconds, user+system) of the OSD, of each of our
# peers and of the client (fio, or rbd bench with its librbd/librados):
# on a small machine the OSD and the clients share the CPUs, so this is
# what decides the ratios. Builds with -tags ceph (needs librados-dev).
#
# rbd bench runs with rbd_cache=false (RBD_CACHE=true to change): with its
# cache librbd acknowledges writes from memory (here 4 KiB writes at queue
# depth 1 came back in 78 us, less than one OSD round trip), while every
# write our stack acknowledges is in RADOS; QEMU with cache=none opens RBD
# disks without the cache too. A second baseline, qemu-nbd over QEMU's rbd
# driver with cache=none, has the same NBD client (fio) as our stack.
set -euo pipefail
cd "$(dirname "$0")/.."
cephdir=${1:-/tmp/archip-bench-ceph}
mib=${2:-256}
conf=$(scripts/micro-ceph.sh start "$cephdir")
pool=archipelago
work=$(mktemp -d /var/tmp/archip-rbench.XXXXXX)
bin=$work/bin
go build -tags ceph -o "$bin/" ./cmd/...
cfg=$work/archipelago.conf
ns=bench-$$
cat > "$cfg" <<CONF
[ARCHIPELAGO]
HOST_ID = bench
RUN_DIR = $work/run
LOG_DIR = $work/log
[XSEG]
SEGMENT_NAME = rbench-$$
SEGMENT_SIZE = 512
[blockerb]
type = rados_blocker
pool = $pool
ceph_conf = $conf
namespace = $ns-b
nr_threads = 16
[blockerm]
type = rados_blocker
pool = $pool
ceph_conf = $conf
namespace = $ns-m
CONF
cleanup() {
  st=$?
  set +e # clean up everything, whatever fails
  if [ $st -ne 0 ]; then
    for f in "$work"/log/*.log; do echo "== $f" >&2; tail -3 "$f" >&2; done
  fi
  "$bin/archipelago" --config "$cfg" stop -f >/dev/null 2>&1 || true
  [ -n "${qpid:-}" ] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  rbd -c "$conf" -p "$pool" rm --no-progress "$ns-rbd" >/dev/null 2>&1 || true
  rbd -c "$conf" -p "$pool" rm --no-progress "$ns-qnbd" >/dev/null 2>&1 || true
  # The micro cluster keeps objects in memory: remove ours.
  for n in "$ns-b" "$ns-m" "$ns-b.locks" "$ns-m.locks"; do
    rados -c "$conf" -p "$pool" -N "$n" ls 2>/dev/null | while read -r o; do rados -c "$conf" -p "$pool" -N "$n" rm "$o"; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/archipelago" --config "$cfg" start >/dev/null
"$bin/vlmc" --config "$cfg" create benchvol --size 512M
ours="nbd+unix:///benchvol?socket=$work/run/nbd.sock"
rbd -c "$conf" -p "$pool" create --size 512M "$ns-rbd"
# Fill both first: the figures are of steady-state I/O, not of first
# writes (which allocate objects, and on our side also update the map).
rbd -c "$conf" -p "$pool" bench --io-type write --io-pattern seq --io-size 4M --io-threads 16 --io-total 512M "$ns-rbd" >/dev/null 2>&1
fio --name=fill --ioengine=nbd --uri="$ours" --rw=write --bs=4M --iodepth=16 --size=512M >/dev/null 2>&1
# A second baseline with the same client as ours: qemu-nbd serving an RBD
# image through QEMU's rbd driver (librbd, cache=none), as a QEMU user
# would reach RBD over NBD. Skipped without the driver (qemu-block-extra).
qemu=""
if qemu-img --help 2>/dev/null | grep -q "Supported formats:.* rbd"; then
  rbd -c "$conf" -p "$pool" create --size 512M "$ns-qnbd"
  qemu-nbd -f raw --cache=none -k "$work/qnbd.sock" -t "rbd:$pool/$ns-qnbd:conf=$conf" >/dev/null 2>&1 &
  qpid=$!
  for _ in $(seq 100); do [ -S "$work/qnbd.sock" ] && break; sleep 0.1; done
  qemu="nbd+unix:///?socket=$work/qnbd.sock"
  fio --name=fill --ioengine=nbd --uri="$qemu" --rw=write --bs=4M --iodepth=16 --size=512M >/dev/null 2>&1
fi

# CPU seconds (user+system) a process and its threads used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# pids of what CPU is counted for: the OSD and our peers.
osd=$(cat "$(dirname "$conf")/run/osd.0.pid")
peers=""
for f in "$work"/run/*.pid; do peers="$peers $(basename "$f" .pid)=$(cat "$f")"; done
declare -A before
snap() { before[osd]=$(cpu "$osd"); for p in $peers; do before[${p%%=*}]=$(cpu "${p#*=}"); done; before[self]=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat); }
# cpuper OPS -> "osd=.. peers=.. client=.." in microseconds of CPU per I/O
cpuper() {
  local ops=$1 out="" tot=0 d
  d=$(python3 -c "print(round(($(cpu "$osd")-${before[osd]})*1e6/$ops))"); out="osd=$d"
  for p in $peers; do
    d=$(python3 -c "print(round(($(cpu "${p#*=}")-${before[${p%%=*}]})*1e6/$ops))"); tot=$((tot+d))
    [ "$d" -gt 1 ] && out="$out ${p%%=*}=$d"
  done
  c=$(python3 -c "print(round(($(awk '{print $14+$15+$16+$17}' /proc/$$/stat)-${before[self]})/$(getconf CLK_TCK)*1e6/$ops))")
  echo "$out client=$c"
}
fiojob() { # rw bs MiB [uri] -> MiB/s
  fio --name=b --ioengine=nbd --uri="${4:-$ours}" --rw="$1" --bs="$2" --iodepth=16 --size=512M \
      --io_size=${3}M --output-format=json >"$work/fio.json" 2>"$work/fio.err" || { cat "$work/fio.err" >&2; exit 1; }
  python3 -c 'import json,sys; s=open(sys.argv[1]).read(); j=json.loads(s[s.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"] else j["write"]; print("%.1f" % (d["bw"]/1024))' "$work/fio.json"
}
rbdjob() { # type pattern size MiB -> MiB/s
  rbd -c "$conf" -p "$pool" --rbd_cache="${RBD_CACHE:-false}" bench --io-type "$1" --io-pattern "$2" --io-size "$3" --io-threads 16 --io-total ${4}M "$ns-rbd" 2>&1 |
    awk '/^elapsed:/ {for (i=1;i<=NF;i++) if ($i=="bytes/sec:") {v=$(i+1); u=$(i+2);
      m = (u ~ /^GiB/) ? 1024 : (u ~ /^MiB/) ? 1 : (u ~ /^KiB/) ? 1/1024 : 1/1048576; printf "%.1f\n", v*m}}'
}
# Each figure is the median of ROUNDS runs, ours and rbd's alternating, so
# that a slow spell of the shared machine or of the OSD hits both sides.
rounds=${ROUNDS:-3}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-16s %12s %12s %6s %10s %6s   %s\n" "job (MiB/s)" "archipelago" "rbd bench" "ratio" "qemu-nbd" "ratio" "CPU us per I/O (ours | rbd)"
for spec in "write rand 4K randwrite" "read rand 4K randread" "write seq 4M write" "read seq 4M read"; do
  set -- $spec
  rs="" as="" qs="" ac="" rc=""
  # 4 MiB jobs move 16 times as much: a few hundred I/Os, not a few dozen
  # whose figure would be mostly start-up.
  case $3 in 4K) m=$mib ops=$((mib*256));; 4M) m=$((mib*16)) ops=$((mib*4));; esac
  for _ in $(seq "$rounds"); do
    snap; rs="$rs $(rbdjob "$1" "$2" "$3" $m)"; rc=$(cpuper $ops)
    snap; as="$as $(fiojob "$4" "$3" $m)"; ac=$(cpuper $ops)
    [ -n "$qemu" ] && qs="$qs $(fiojob "$4" "$3" $m "$qemu")"
  done
  r=$(echo "$rs" | median) a=$(echo "$as" | median) q=-- qr=--
  if [ -n "$qemu" ]; then q=$(echo "$qs" | median); qr=$(python3 -c "print('%.2f' % ($a/$q))"); fi
  printf "%-16s %12s %12s %6s %10s %6s   %s | %s\n" "$1 $2 $3" "$a" "$r" "$(python3 -c "print('%.2f' % ($a/$r))")" "$q" "$qr" "$ac" "$rc"
done
