#!/usr/bin/env bash
# End-to-end NBD benchmark: fio (ioengine=nbd) against Archipelago's block
# endpoint (file backend) and against qemu-nbd serving a raw file on the same
# filesystem, over Unix sockets, in the same run; prints each ratio.
#
#   scripts/bench-nbd.sh [DIR] [SECONDS]
#
# DIR (default /var/tmp) holds both backends' data; SECONDS (default 10) is
# the length of each fio job. Needs fio, qemu-utils (qemu-nbd) and nbdcopy.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-/var/tmp}
secs=${2:-10}
size=1G
work=$(mktemp -d "$base/archip-bench.XXXXXX")
bin=$work/bin
go build -o "$bin/" ./cmd/...
conf=$work/archipelago.conf
seg=bench-$$
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
qpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
  "$bin/archipelago" --config "$conf" stop -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/archipelago" --config "$conf" start >/dev/null
"$bin/vlmc" --config "$conf" create benchvol --size $size
ours="nbd+unix:///benchvol?socket=$work/run/nbd.sock"
raw=$work/qemu.img
truncate -s $size "$raw"
qemu-nbd -t -f raw -k "$work/qemu.sock" --shared=16 "$raw" &
qpid=$!
theirs="nbd+unix:///?socket=$work/qemu.sock"
for i in $(seq 50); do [ -S "$work/qemu.sock" ] && break; sleep 0.1; done

# Fill both with data so that reads hit storage, not holes.
head -c $size /dev/urandom > "$work/fill.img"
nbdcopy --threads=4 --connections=4 "$work/fill.img" "$ours"
nbdcopy --threads=4 --connections=4 "$work/fill.img" "$theirs"
rm -f "$work/fill.img"

job() { # name rw bs iodepth uri -> IOPS and MiB/s
  if ! fio --name="$1" --ioengine=nbd --uri="$5" --rw="$2" --bs="$3" --iodepth="$4" \
      --size=$size --time_based --runtime="$secs" --ramp_time=1 --output-format=json >"$work/fio.json" 2>"$work/fio.err"; then
    echo "fio $* failed:" >&2; cat "$work/fio.err" >&2; exit 1
  fi
  python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"] else j["write"]; print("%.0f %.1f" % (d["iops"], d["bw"]/1024))' <"$work/fio.json"
}

printf "%-22s %12s %12s %8s\n" "job" "archipelago" "qemu-nbd" "ratio"
for spec in "randread 4k 1" "randwrite 4k 1" "randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8"; do
  set -- $spec
  a=$(job "$1" "$1" "$2" "$3" "$ours")
  q=$(job "$1" "$1" "$2" "$3" "$theirs")
  if [ "$2" = 4k ]; then
    av=${a%% *}; qv=${q%% *}; unit=IOPS
  else
    av=${a##* }; qv=${q##* }; unit=MiB/s
  fi
  printf "%-22s %12s %12s %8s\n" "$1 $2 qd$3 ($unit)" "$av" "$qv" "$(python3 -c "print('%.2f' % ($av/$qv))")"
done
