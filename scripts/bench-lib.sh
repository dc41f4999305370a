# bench-lib.sh: what the bench scripts share (sourced, not run): fio runs
# that report IOPS, MiB/s, the number of I/Os and fio's own CPU; the CPU
# time of a set of processes per I/O; medians and ratios.
#
# CPU per I/O: a process's utime+stime (/proc/PID/stat, every thread) read
# before and after a fio run, the difference divided by the I/Os that run
# did (fio runs without ramp_time, so that its count covers the whole time
# the processes were measured, connection set-up included). fio's own CPU
# is its user+system time with its job processes and all their threads
# (bash's time: fio's own report counts only the job's thread, not, with
# the rbd engine, librbd's and librados's threads). Work the
# kernel does in its own threads (loop devices' workers, softirqs charged
# to whichever process was running) is in neither figure.

hz=$(getconf CLK_TCK)

# ticks PID -> the clock ticks (user+system) PID used so far (0 if gone).
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# cpu_begin "name=pid ..." snapshots the CPU of these processes.
declare -A _cpu0
cpu_begin() {
  local np
  _cpu0=()
  for np in $1; do _cpu0[${np%%=*}]=$(ticks "${np#*=}"); done
}

# cpu_end OPS "name=pid ..." ["name=pid ..."] -> "TOTAL name=us ...":
# microseconds of CPU per I/O since cpu_begin, of the first list together
# and of each process; those of the second list are shown, not summed.
cpu_end() {
  local ops=$1 np args="" k=0
  for np in $2; do args="$args ${np%%=*} ${_cpu0[${np%%=*}]} $(ticks "${np#*=}")"; k=$((k+1)); done
  for np in ${3:-}; do args="$args ${np%%=*} ${_cpu0[${np%%=*}]} $(ticks "${np#*=}")"; done
  python3 - "$ops" "$hz" "$k" $args <<'PY'
import sys
ops, hz, k, a = max(int(sys.argv[1]), 1), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
per = [(a[i], (int(float(a[i+2])) - int(float(a[i+1]))) * 1e6 / hz / ops) for i in range(0, len(a), 3)]
print("%.1f" % sum(v for _, v in per[:k]), " ".join("%s=%.1f" % (n, v) for n, v in per))
PY
}

# fio_json FILE CPU_SECONDS -> "IOPS MiB/s IOS FIO_US_PER_IO" of the
# first job (read or write, whichever moved data); CPU_SECONDS is fio's.
fio_json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
s = open(sys.argv[1]).read()
j = json.loads(s[s.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
print("%.0f %.1f %d %.1f" % (d["iops"], d["bw"] / 1024, ios, float(sys.argv[2]) * 1e6 / max(ios, 1)))
PY
}

# median: of the numbers on stdin (space or newline separated).
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ratio A B -> A/B with two decimals ("--" if B is 0 or missing).
ratio() { python3 -c "import sys; a,b=sys.argv[1:]; print('%.2f' % (float(a)/float(b)) if b not in ('','--') and float(b) else '--')" "$1" "$2"; }

# permedian "t1 a=1 b=2|t2 a=3 b=4|..." -> "a=.. b=..": the median of each
# process's figure over the rounds.
permedian() {
  python3 - "$1" <<'PY'
import sys, statistics
rounds = [r.split()[1:] for r in sys.argv[1].split("|") if r.strip()]
names = [kv.split("=")[0] for kv in rounds[0]] if rounds else []
out = []
for n in names:
    vs = sorted(float(kv.split("=")[1]) for r in rounds for kv in r if kv.split("=")[0] == n)
    out.append("%s=%.1f" % (n, vs[(len(vs) - 1) // 2]))
print(" ".join(out))
PY
}

# load: the load average now (the machine is shared: say how loaded).
load() { cut -d' ' -f1-3 /proc/loadavg; }

# LAYOUT (hosted, split or both; default hosted) is the process layout of
# our stack: hosted runs every role in one archipelagod ([PEERS] HOSTED =
# all), split each role in its own program (as before issue 13); both
# starts one stack of each and measures them side by side, as the sides
# "hosted" and "split" (else our side is "ours"). layouts lists our sides.
LAYOUT=${LAYOUT:-hosted}
case $LAYOUT in
  hosted | split) layouts=ours ;;
  both) layouts="hosted split" ;;
  *) echo "LAYOUT=$LAYOUT: want hosted, split or both" >&2; exit 2 ;;
esac
export OURS=$layouts

# layout_of SIDE -> hosted or split: the layout of one of our sides (hosted
# or split by name, else $LAYOUT's).
layout_of() { case $1 in hosted | split) echo "$1" ;; *) echo "$LAYOUT" ;; esac; }

# peers_conf LAYOUT -> the [PEERS] lines of a configuration in LAYOUT.
peers_conf() { if [ "$1" = split ]; then printf '[PEERS]\nHOSTED =\n'; else printf '[PEERS]\nHOSTED = all\n'; fi; }

# define_sides FUNC: defines side_<side> for each of our sides, calling
# FUNC SIDE RW BS DEPTH.
define_sides() {
  local s
  for s in $layouts; do eval "side_$s() { $1 $s \"\$@\"; }"; done
}

# peers RUN_DIR -> "name=pid ..." of the processes whose pid the pidfiles
# there hold, each once: a role's own program by its role's name, the
# host of hosted roles as archipelagod (its CPU is that of all of them:
# per role it cannot be told apart).
peers() {
  local f pid name out="" seen=" "
  for f in "$1"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    case $seen in *" $pid "*) continue ;; esac
    seen="$seen$pid "
    name=$(basename "$f" .pid)
    [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = archipelagod ] && name=archipelagod
    out="$out $name=$pid"
  done
  echo "$out"
}

# stack_start WORK [DATA] [LAYOUT]: builds the programs into $bin (default
# WORK/bin; once), writes WORK/archipelago.conf (file blockers, data and
# maps under DATA, default WORK; LAYOUT, default $LAYOUT) and starts the
# peers. Sets bin and conf; stack_stop stops every stack started.
stacks=()
stack_start() {
  local w=$1 data=${2:-$1} layout=${3:-$LAYOUT}
  bin=${bin:-$w/bin}
  conf=$w/archipelago.conf
  mkdir -p "$w"
  [ -x "$bin/archipelago" ] || go build -o "$bin/" ./cmd/...
  cat > "$conf" <<CONF
[ARCHIPELAGO]
HOST_ID = bench
RUN_DIR = $w/run
LOG_DIR = $w/log
[XSEG]
SEGMENT_NAME = bench-$$-${#stacks[@]}
SEGMENT_SIZE = 512
$(peers_conf "$layout")
[blockerb]
archip_dir = $data/data
nr_threads = 16
[blockerm]
archip_dir = $data/maps
CONF
  stacks+=("$conf")
  "$bin/archipelago" --config "$conf" start >/dev/null
}
stack_stop() {
  local c
  for c in "${stacks[@]}"; do "$bin/archipelago" --config "$c" stop -f >/dev/null 2>&1 || true; done
}

# measure PROCS DIR FIO-ARGS...: one fio job (its JSON in DIR/fio.json);
# sets R ("IOPS MiB/s IOS FIO_US") and C ("TOTAL_US name=us ...", the CPU
# per I/O of PROCS, "name=pid ..."). The processes of $extra ("name=pid
# ...", e.g. a Ceph OSD both sides use) are listed in C too, after the
# total and not in it.
extra=""
measure() {
  local procs=$1 dir=$2 r
  shift 2
  local TIMEFORMAT='%3U %3S' st=0 t
  cpu_begin "$procs $extra"
  { time { fio "$@" --output-format=json >"$dir/fio.json" 2>"$dir/fio.err" || st=$?; }; } 2>"$dir/fio.time"
  if [ $st != 0 ]; then
    echo "fio $* failed:" >&2; cat "$dir/fio.err" >&2; return 1
  fi
  t=($(cat "$dir/fio.time"))
  R=$(fio_json "$dir/fio.json" "$(python3 -c "print(${t[0]}+${t[1]})")")
  r=($R)
  C=$(cpu_end "${r[2]}" "$procs" "$extra")
}

# compare "A B ..." RW BS DEPTH: ROUNDS (default 3) rounds of one job per
# side in turn, each run by the function the script defines as side_A,
# side_B, ... (called with RW BS DEPTH; it calls measure). Prints the
# medians: IOPS (MiB/s for blocks other than 4k) of each side, then the
# ratio of each of our sides ($OURS, default A) to each other side, and
# with two of ours the first's to the second's; CPU us per I/O of each
# side's processes (all together) and fio's own; then each side's
# processes one by one.
compare() {
  local sides=($1) rw=$2 bs=$3 qd=$4 v s o line cpu="" fios=""
  local ours=(${OURS:-${sides[0]}})
  local -A val cpus fio per med
  for _ in $(seq "${ROUNDS:-3}"); do
    for s in "${sides[@]}"; do
      "side_$s" "$rw" "$bs" "$qd"
      r=($R); c=($C)
      case $bs in 4k|4K) v=${r[0]} ;; *) v=${r[1]} ;; esac
      val[$s]="${val[$s]:-} $v"; fio[$s]="${fio[$s]:-} ${r[3]}"; cpus[$s]="${cpus[$s]:-} ${c[0]}"; per[$s]="${per[$s]:-}|$C"
    done
  done
  local unit=IOPS; case $bs in 4k|4K) ;; *) unit=MiB/s ;; esac
  line=$(printf "%-24s" "$rw $bs qd$qd ($unit)")
  for s in "${sides[@]}"; do
    med[$s]=$(echo "${val[$s]}" | median)
    line="$line $(printf "%9s" "${med[$s]}")"
    cpu="$cpu $(echo "${cpus[$s]}" | median)"; fios="$fios $(echo "${fio[$s]}" | median)"
  done
  while read -r o s; do
    line="$line $(printf "%*s" "$(ratio_width "$o" "$s")" "$(ratio "${med[$o]}" "${med[$s]}")")"
  done < <(ratio_pairs "${sides[*]}")
  echo "$line  | CPU:$cpu | fio:$fios"
  for s in "${sides[@]}"; do
    printf "%-24s %s: %s (rounds:%s)\n" "" "$s" "$(permedian "${per[$s]}")" "${val[$s]}"
  done
}

# ratio_pairs "A B ..." -> "OURS OTHER" lines: the ratios compare prints.
ratio_pairs() {
  local sides=($1) o s
  local ours=(${OURS:-${sides[0]}})
  for o in "${ours[@]}"; do
    for s in "${sides[@]}"; do
      [[ " ${ours[*]} " == *" $s "* ]] || echo "$o $s"
    done
  done
  [ ${#ours[@]} -lt 2 ] || echo "${ours[0]} ${ours[1]}"
}

# ratio_width A B: the width of the ratio column A/B.
ratio_width() { local n="$1/$2"; echo $(( ${#n} > 5 ? ${#n} : 5 )); }

# compare_header "A B ...": the column names of compare's lines.
compare_header() {
  local sides=($1) s o line
  line=$(printf "%-24s" "job")
  for s in "${sides[@]}"; do line="$line $(printf "%9s" "$s")"; done
  while read -r o s; do line="$line $(printf "%*s" "$(ratio_width "$o" "$s")" "$o/$s")"; done < <(ratio_pairs "$1")
  echo "$line  | CPU us/I/O: $1 (our processes / the server) | fio's own us/I/O: $1"
}

# The NBD sides of bench-nbd.sh and bench-ceiling.sh, which share them.
# They read work, size and secs, each layout's volume URI uris[LAYOUT],
# and set procs[LAYOUT].

# nbd_fill THEIRS: writes size random bytes through every layout's URI and
# THEIRS, so that reads find data, not holes; sets procs[L] to the
# processes of layout L (peers).
nbd_fill() {
  local L
  head -c "$size" /dev/urandom > "$work/fill.img"
  for L in $layouts; do
    nbdcopy --threads=4 --connections=4 "$work/fill.img" "${uris[$L]}"
    procs[$L]=$(peers "$work/$L/run")
  done
  nbdcopy --threads=4 --connections=4 "$work/fill.img" "$1"
  rm -f "$work/fill.img"
}

# nbd_job PROCS URI RW BS DEPTH: one fio job (ioengine=nbd) of secs
# seconds over size bytes of URI, the CPU of PROCS measured.
nbd_job() {
  measure "$1" "$work" --name="$3" --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" --iodepth="$5" \
    --size="$size" --time_based --runtime="$secs"
}

# nbd_ours L RW BS DEPTH: nbd_job on layout L's stack.
nbd_ours() { local L=$1; shift; nbd_job "${procs[$L]}" "${uris[$L]}" "$@"; }
