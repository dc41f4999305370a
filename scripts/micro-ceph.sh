#!/usr/bin/env bash
# micro-ceph.sh: a single-node Ceph cluster on 127.0.0.1 for tests.
#
# Usage: scripts/micro-ceph.sh start|stop|status DIR
#
#   start   installs Debian's Ceph packages if missing (ceph-mon, ceph-osd,
#           ceph-common, librados-dev), boots ONE monitor and ONE memstore
#           OSD with all state, logs, sockets and pidfiles under DIR, makes
#           the pool $MICRO_CEPH_POOL (default "archipelago", size 1) and
#           prints the path of DIR/ceph.conf. Idempotent: a running cluster
#           is left alone (its objects too); a stopped or broken one is made
#           anew, since a memstore OSD keeps nothing across a restart.
#   stop    stops the daemons by the pids in DIR/run (SIGTERM, then SIGKILL
#           after 20 s).
#   status  prints whether each daemon runs and `ceph -s`; exits 1 unless
#           both run.
#
# Clients use DIR/ceph.conf, which names DIR/keyring (client.admin):
#
#   rados -c /tmp/ceph-dev/ceph.conf -p archipelago ls
#   ARCHIPELAGO_CEPH_CONF=/tmp/ceph-dev/ceph.conf ARCHIPELAGO_CEPH_POOL=archipelago \
#       go test -tags ceph ./store/radosstore/
#
# Environment: MICRO_CEPH_POOL (pool name), MICRO_CEPH_PORT (monitor port,
# default the first free one from 6789), MICRO_CEPH_MEM (memstore capacity in bytes, default 4 GiB).
# There is no mgr: pools, rados and rbd work without one, but `ceph pg
# stat` and `ceph osd df` hang.
set -euo pipefail

POOL="${MICRO_CEPH_POOL:-archipelago}"
PORT="${MICRO_CEPH_PORT:-6789}"
MEM="${MICRO_CEPH_MEM:-4294967296}"
PACKAGES=(ceph-mon ceph-osd ceph-common librados-dev)

usage() {
	echo "usage: $0 start|stop|status DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
CMD=$1
DIR=$2
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CONF="$DIR/ceph.conf"

log() { echo "micro-ceph: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# ceph runs the command line tool with a deadline: without it a sick
# cluster hangs the caller.
ceph() { timeout 30 /usr/bin/ceph -c "$CONF" --connect-timeout 20 "$@"; }

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	local apt=(apt-get install -y -q --no-install-recommends "${missing[@]}")
	export DEBIAN_FRONTEND=noninteractive
	# The first download has been seen failing once (a rename error in
	# the archive cache): try again before giving up.
	if ! { apt-get update -q && "${apt[@]}"; } >"$DIR/apt.log" 2>&1; then
		log "apt-get failed (see $DIR/apt.log), trying again"
		{ apt-get update -q && "${apt[@]}"; } >>"$DIR/apt.log" 2>&1 || die "apt-get failed twice, see $DIR/apt.log"
	fi
}

# alive NAME: the daemon NAME (mon.a, osd.0) runs.
alive() {
	local pidfile="$DIR/run/$1.pid"
	[ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

write_conf() {
	local fsid=$1
	cat >"$CONF" <<EOF
# Written by scripts/micro-ceph.sh: a single-node test cluster.
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$PORT
public addr = 127.0.0.1
ms bind msgr2 = false
keyring = $DIR/keyring
run dir = $DIR/run
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false

[mon]
mon data = $DIR/mon.\$id
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
paxos propose interval = 0.05
paxos min wait = 0.01
mon osd down out interval = 0

[osd]
osd data = $DIR/osd.\$id
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
osd objectstore = memstore
memstore device bytes = $MEM
memstore page set = true
cluster addr = 127.0.0.1

[client]
log file = /dev/null
admin socket =
EOF
}

# wait_writable waits until a write to the pool succeeds, for 60 s at most.
wait_writable() {
	local deadline=$((SECONDS + 60))
	while [ $SECONDS -lt $deadline ]; do
		if timeout 10 rados -c "$CONF" -p "$POOL" --rados-osd-op-timeout 5 \
			put micro-ceph-probe "$CONF" >/dev/null 2>&1; then
			timeout 10 rados -c "$CONF" -p "$POOL" rm micro-ceph-probe >/dev/null 2>&1 || true
			return
		fi
		sleep 0.1
	done
	die "pool $POOL not writable after 60 s; logs in $DIR/log"
}

make_pool() {
	ceph osd pool create "$POOL" 8 8 replicated >/dev/null 2>&1 || die "pool create $POOL failed"
	ceph osd pool set "$POOL" size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
	ceph osd pool application enable "$POOL" rados >/dev/null 2>&1 || true
}

bootstrap() {
	log "making a new cluster in $DIR"
	rm -rf "$DIR/mon.a" "$DIR/osd.0" "$DIR/run" "$DIR/log" "$DIR/keyring" "$DIR/monmap"
	mkdir -p "$DIR/run" "$DIR/log" "$DIR/osd.0"
	local fsid osduuid
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osduuid=$(cat /proc/sys/kernel/random/uuid)
	if [ -z "${MICRO_CEPH_PORT:-}" ]; then
		# Another cluster (a developer's) may have 6789: take the next
		# free port; ceph.conf records it.
		while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
			PORT=$((PORT + 1))
		done
	fi
	write_conf "$fsid"
	# One keyring for everything: the monitor imports its entities (with
	# their caps) at mkfs.
	ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
	ceph-authtool "$DIR/keyring" --gen-key -n osd.0 \
		--cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
	chmod 600 "$DIR/keyring"
	monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$PORT]" "$DIR/monmap" >/dev/null
	/usr/bin/ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" \
		>"$DIR/log/mkfs.log" 2>&1 || die "ceph-mon --mkfs failed; see $DIR/log/mkfs.log"
	/usr/bin/ceph-mon -c "$CONF" -i a </dev/null >>"$DIR/log/start.log" 2>&1 ||
		die "ceph-mon failed; see $DIR/log/mon.a.log and start.log"
	local id
	id=$(ceph osd new "$osduuid") || die "ceph osd new failed; see $DIR/log/mon.a.log"
	[ "$id" = 0 ] || die "ceph osd new made osd.$id, want osd.0"
	/usr/bin/ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osduuid" \
		>>"$DIR/log/mkfs.log" 2>&1 || die "ceph-osd --mkfs failed; see $DIR/log/mkfs.log"
	/usr/bin/ceph-osd -c "$CONF" -i 0 </dev/null >>"$DIR/log/start.log" 2>&1 ||
		die "ceph-osd failed; see $DIR/log/osd.0.log and start.log"
	make_pool
	touch "$DIR/bootstrapped"
}

cmd_start() {
	install_packages
	if [ -f "$DIR/bootstrapped" ] && [ -f "$CONF" ] && alive mon.a && alive osd.0; then
		# Running: make sure of the pool (another name than at bootstrap).
		if ! ceph osd pool ls | grep -qx "$POOL"; then
			make_pool
		fi
	else
		# Memstore keeps nothing across a restart of the OSD, so a stopped
		# or broken cluster is made anew.
		cmd_stop >/dev/null 2>&1 || true
		bootstrap
	fi
	wait_writable
	echo "$CONF"
}

cmd_stop() {
	local name pid pids=()
	for name in osd.0 mon.a; do
		if alive "$name"; then
			pid=$(cat "$DIR/run/$name.pid")
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 1 200); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid ignored SIGTERM for 20 s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	rm -f "$DIR"/run/*.pid
	log "stopped"
}

cmd_status() {
	local ok=0 name
	for name in mon.a osd.0; do
		if alive "$name"; then
			echo "$name: running, pid $(cat "$DIR/run/$name.pid")"
		else
			echo "$name: stopped"
			ok=1
		fi
	done
	[ $ok -eq 0 ] && ceph -s || true
	return $ok
}

case "$CMD" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) usage ;;
esac
