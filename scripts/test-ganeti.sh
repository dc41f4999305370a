#!/usr/bin/env bash
# test-ganeti.sh: the Ganeti ExtStorage provider against Debian 12's real
# Ganeti (3.0.2), on a one-node cluster this script makes and destroys.
#
# Usage (as root, on Debian 12; no systemd needed): scripts/test-ganeti.sh
#
# It installs what is missing of ganeti, ganeti-os-noop, qemu-utils and
# qemu-system-x86 (no recommends; no daemon started), builds ./cmd/... into a
# temporary directory, installs the provider as
# /usr/local/lib/ganeti/extstorage/archipelago (symlinks named after the
# actions to the built archipelago-extstorage, plus parameters.list), then
# re-runs itself in private UTS, network and mount namespaces where:
#   - lo is up and a bridge carries the node's and the cluster's addresses
#     (192.0.2.0/24, a documentation range: nothing leaves the namespace);
#   - /etc/hosts, /var/lib/ganeti, /run/ganeti and /var/log/ganeti are
#     mounts of the namespace's own (the host's files are never written);
#   - the peers run with a configuration of the test's own (its segment,
#     RUN_DIR, LOG_DIR and storage under the temporary directory), which the
#     provider reads through ARCHIPELAGO_CONFIG, inherited from ganeti-noded;
#   - gnt-cluster init (fake and kvm hypervisors, QEMU under TCG; ext disk
#     template; an instance policy that allows small disks and no NICs),
#     then the instance operations, each checked through vlmc, the
#     attached device and the volume's NBD URI; a KVM instance whose QEMU
#     opens one disk through the device and one through attach's kvm: URI
#     (access=userspace), and writes to both; gnt-backup export of it
#     (the provider's snapshot action, snapshots attached, read, removed);
#   - gnt-cluster destroy, the Ganeti daemons and the peers stopped.
# Every process of the namespace is gone when it returns; the script fails
# if one is left. Each step prints its duration; the first failing step
# ends the run with a message naming it (and the Ganeti and peer logs).
#
# Environment: GANETI_TEST_KEEP=1 keeps the temporary directory (kept on
# failure unless 0); GANETI_TEST_BIN=DIR takes the programs from DIR
# instead of building them.
set -euo pipefail

NODE=node1.ganeti.test
NODE_IP=192.0.2.10
CLUSTER=cluster.ganeti.test
CLUSTER_IP=192.0.2.100
BRIDGE=gnt0
PROVIDER_DIR=/usr/local/lib/ganeti/extstorage/archipelago
ACTIONS=(create attach detach remove grow setinfo verify snapshot open close)

SELF=$(readlink -f "$0")
T0=$SECONDS
step_start=$SECONDS
step_name=""
step() {
	local now=$SECONDS
	[ -z "$step_name" ] || printf '   ok (%d s)\n' $((now - step_start))
	step_name="$*"
	step_start=$now
	printf '== %s [%s] %s\n' "$(date -u +%T)" "${PHASE:-host}" "$step_name"
}
# end_step: closes the current step (prints its duration).
end_step() {
	[ -z "$step_name" ] || printf '   ok (%d s)\n' $((SECONDS - step_start))
	step_name=""
}
fail() {
	printf 'FAIL at step "%s" after %d s: %s\n' "$step_name" $((SECONDS - step_start)) "$*" >&2
	exit 1
}
# run CMD...: runs a command, shows its output, fails the step if it fails.
run() {
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/   | /'
	[ $rc -eq 0 ] || fail "$* exited $rc"
}
# quiet CMD...: like run, showing the output only if the command fails.
quiet() {
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	[ $rc -eq 0 ] || { printf '%s\n' "$out" | sed 's/^/   | /'; fail "$* exited $rc"; }
	echo "   $1 $2: ok"
}
# capture VAR CMD...: like run, and keeps the output in VAR.
capture() {
	local __var=$1 __out __rc=0
	shift
	__out=$("$@" 2>&1) || __rc=$?
	[ -z "$__out" ] || printf '%s\n' "$__out" | sed 's/^/   | /'
	[ $__rc -eq 0 ] || fail "$* exited $__rc"
	printf -v "$__var" '%s' "$__out"
}

if [ "${1:-}" != --inside ]; then
	# ---------------------------------------------------------------- host
	[ "$(id -u)" -eq 0 ] || { echo "test-ganeti.sh: run as root" >&2; exit 2; }
	cd "$(dirname "$0")/.."
	REPO=$(pwd)
	export PATH="$PATH:/usr/local/go/bin"

	step "packages"
	need=()
	for p in ganeti ganeti-os-noop qemu-utils qemu-system-x86; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		export DEBIAN_FRONTEND=noninteractive
		# No recommends: they would pull xen, drbd and debootstrap.
		# policy-rc.d keeps the packages from starting daemons (sshd,
		# ganeti) on the host.
		policy_made=""
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			policy_made=1
		fi
		apt-get update -qq
		apt_rc=0
		apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
			apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null || apt_rc=$?
		[ -z "$policy_made" ] || rm -f /usr/sbin/policy-rc.d
		[ $apt_rc -eq 0 ] || fail "apt-get install ${need[*]} exited $apt_rc"
	fi
	echo "   ganeti $(dpkg-query -W -f='${Version}' ganeti), ganeti-os-noop $(dpkg-query -W -f='${Version}' ganeti-os-noop)"

	TMP=$(mktemp -d /tmp/test-ganeti.XXXXXX)
	export TMP
	made_key=""
	made_provider=""
	made_dirs=""
	cleanup_host() {
		local rc=$?
		if [ -n "$made_provider" ]; then
			rm -rf "$PROVIDER_DIR"
			# The parents this script made, and only those.
			for d in $made_dirs; do rmdir "$d"; done
		fi
		[ -z "$made_key" ] || rm -f /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_rsa_key.pub
		if [ "${GANETI_TEST_KEEP:-}" = 1 ] || [ $rc -ne 0 ] && [ "${GANETI_TEST_KEEP:-}" != 0 ]; then
			echo "kept $TMP"
		else
			rm -rf "$TMP"
		fi
		return $rc
	}
	trap cleanup_host EXIT

	if [ -n "${GANETI_TEST_BIN:-}" ]; then
		step "programs from $GANETI_TEST_BIN"
		run ln -s "$(cd "$GANETI_TEST_BIN" && pwd)" "$TMP/bin"
	else
		step "build ./cmd/..."
		run go build -o "$TMP/bin/" ./cmd/...
	fi
	[ -x "$TMP/bin/archipelago-extstorage" ] || fail "go build made no archipelago-extstorage (cmd/archipelago-extstorage missing?)"

	step "install the provider in $PROVIDER_DIR"
	if [ -e "$PROVIDER_DIR" ]; then
		# One of ours from a run that was killed: every action a link
		# into a /tmp/test-ganeti.* directory.
		for a in "${ACTIONS[@]}"; do
			case $(readlink "$PROVIDER_DIR/$a") in
			/tmp/test-ganeti.*/bin/archipelago-extstorage) ;;
			*) fail "$PROVIDER_DIR exists and is not a leftover of this test: left alone" ;;
			esac
		done
		echo "   removing $PROVIDER_DIR, left by a run that was killed"
		rm -rf "$PROVIDER_DIR"
	fi
	for d in /srv/ganeti/extstorage /usr/lib/ganeti/extstorage; do
		[ ! -e "$d/archipelago" ] || fail "$d/archipelago would hide ours (Ganeti takes the first provider in its search path)"
	done
	made_provider=1
	for d in /usr/local/lib/ganeti /usr/local/lib/ganeti/extstorage; do
		[ -d "$d" ] || made_dirs="$d $made_dirs"
	done
	mkdir -p "$PROVIDER_DIR"
	for a in "${ACTIONS[@]}"; do
		ln -s "$TMP/bin/archipelago-extstorage" "$PROVIDER_DIR/$a"
	done
	cp "$REPO/packaging/ganeti/parameters.list" "$PROVIDER_DIR/" ||
		fail "no packaging/ganeti/parameters.list"
	ls -l "$PROVIDER_DIR" | sed 's/^/   | /'

	if [ ! -e /etc/ssh/ssh_host_rsa_key.pub ]; then
		step "make /etc/ssh/ssh_host_rsa_key (gnt-cluster init reads its .pub)"
		made_key=1
		mkdir -p /etc/ssh
		run ssh-keygen -q -t rsa -b 2048 -N '' -f /etc/ssh/ssh_host_rsa_key
	fi

	step "enter private UTS, network and mount namespaces"
	rc=0
	PHASE=ns unshare --uts --net --mount --propagation private -- "$SELF" --inside || rc=$?
	step_name=""
	step "check that the namespace is gone"
	if [ -s "$TMP/netns" ]; then
		left=()
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/ns/net" 2>/dev/null)" = "$(cat "$TMP/netns")" ] && left+=("${p#/proc/}")
		done
		if [ ${#left[@]} -gt 0 ]; then
			ps -o pid,args -p "$(IFS=,; echo "${left[*]}")" | sed 's/^/   | /'
			kill -9 "${left[@]}" 2>/dev/null || true
			fail "processes left in the test's namespace: ${left[*]} (killed)"
		fi
	fi
	end_step
	if [ $rc -ne 0 ]; then
		echo "test-ganeti.sh: FAIL after $((SECONDS - T0)) s (the first FAIL line above names the step)" >&2
		exit 1
	fi
	echo "test-ganeti.sh: PASS in $((SECONDS - T0)) s"
	exit 0
fi

# ------------------------------------------------------------ namespace
# Here: private UTS, network and mount namespaces; TMP and the built
# programs come from the host part.
export PHASE=ns
BIN=$TMP/bin
readlink /proc/self/ns/net >"$TMP/netns"
CONF=$TMP/archipelago.conf
export ARCHIPELAGO_CONFIG=$CONF
export PATH="$BIN:$PATH"
cluster_up=""
peers_up=""

dump_logs() {
	local f
	for f in /var/log/ganeti/node-daemon.log /var/log/ganeti/master-daemon.log $(ls -t /var/log/ganeti/extstorage/*.log 2>/dev/null | head -n 6) "$TMP"/log/*; do
		[ -f "$f" ] || continue
		echo "---- last lines of $f"
		tail -n 30 "$f"
	done
}

cleanup_ns() {
	local rc=$?
	set +e
	printf '== %s [ns] cleanup (exit status %d)\n' "$(date -u +%T)" "$rc"
	[ $rc -eq 0 ] || dump_logs
	if [ -n "$cluster_up" ]; then
		# Instances first: destroy refuses a cluster that has some.
		for i in $(gnt-instance list --no-headers -o name 2>/dev/null); do
			gnt-instance remove -f --ignore-failures --shutdown-timeout=0 "$i" 2>&1 | sed 's/^/   | /'
		done
		gnt-cluster destroy --yes-do-it 2>&1 | sed 's/^/   | /' || { echo "   gnt-cluster destroy failed"; rc=1; }
	fi
	/usr/lib/ganeti/daemon-util stop-all >/dev/null 2>&1
	if [ -n "$peers_up" ]; then
		for d in $(vlmc showmapped 2>/dev/null | awk 'NR>1 {print $3}'); do
			vlmc unmap "$d" 2>&1 | sed 's/^/   | /'
		done
		archipelago stop -f 2>&1 | sed 's/^/   | /' || rc=1
	fi
	# Whatever is left in this network namespace was started here.
	local me=$$ ns p left=()
	ns=$(readlink /proc/self/ns/net)
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[ "$p" = "$me" ] || [ "$p" = "$BASHPID" ] && continue
		[ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$ns" ] || continue
		grep -q . "/proc/$p/cmdline" 2>/dev/null || continue
		left+=("$p")
	done
	if [ ${#left[@]} -gt 0 ]; then
		echo "   still running in the namespace, killed:"
		ps -o pid,args -p "$(IFS=,; echo "${left[*]}")" | sed 's/^/   | /'
		kill -9 "${left[@]}" 2>/dev/null
	fi
	exit $rc
}
trap cleanup_ns EXIT

step "network: lo, bridge $BRIDGE with $NODE_IP/24"
run hostname "$NODE"
run ip link set lo up
run ip link add "$BRIDGE" type bridge
# A port (one end of a veth pair) gives the bridge a carrier, as a real
# one has.
run ip link add gnt0p type veth peer name gnt0q
run ip link set gnt0p master "$BRIDGE"
run ip link set gnt0p up
run ip link set gnt0q up
run ip link set "$BRIDGE" up
run ip addr add "$NODE_IP/24" dev "$BRIDGE"
# Ganeti looks for bridges in /sys/class/net: a sysfs of this network
# namespace's.
run mount -t sysfs sysfs /sys

step "private /etc/hosts, /var/lib/ganeti, /run/ganeti, /var/log/ganeti"
cat >"$TMP/hosts" <<EOF
127.0.0.1 localhost
$NODE_IP $NODE ${NODE%%.*}
$CLUSTER_IP $CLUSTER ${CLUSTER%%.*}
EOF
run mount --bind "$TMP/hosts" /etc/hosts
mkdir -p /var/lib/ganeti /run/ganeti /var/log/ganeti "$TMP/ganeti-log/extstorage"
run mount -t tmpfs -o mode=0755 tmpfs /var/lib/ganeti
run mount -t tmpfs -o mode=0755 tmpfs /run/ganeti
run mount --bind "$TMP/ganeti-log" /var/log/ganeti
run /usr/lib/ganeti/ensure-dirs
# Exports (gnt-backup) go to /var/lib/ganeti/export: on disk, not in the
# tmpfs.
mkdir -p "$TMP/export" /var/lib/ganeti/export
run mount --bind "$TMP/export" /var/lib/ganeti/export
[ -d /var/log/ganeti/extstorage ] || fail "/var/log/ganeti/extstorage missing"
getent hosts "$NODE" | grep -q "$NODE_IP" || fail "$NODE does not resolve to $NODE_IP"

step "start the peers (configuration $CONF)"
cat >"$CONF" <<EOF
[ARCHIPELAGO]
HOST_ID = $NODE
RUN_DIR = $TMP/run
LOG_DIR = $TMP/log

[XSEG]
SEGMENT_NAME = test-ganeti-$$
SEGMENT_SIZE = 256

[blockerb]
archip_dir = $TMP/data

[blockerm]
archip_dir = $TMP/maps
EOF
peers_up=1
run archipelago start
run archipelago status

step "gnt-cluster init $CLUSTER (fake and kvm hypervisors, ext disks)"
cluster_up=1
run gnt-cluster init --no-ssh-init --no-etc-hosts \
	--master-netdev "$BRIDGE" --master-netmask 24 -N link="$BRIDGE" \
	--enabled-hypervisors fake,kvm --enabled-disk-templates ext \
	-H kvm:kvm_path=/usr/bin/qemu-system-x86_64,kvm_flag=disabled,kernel_path=,initrd_path=,vnc_bind_address=,serial_console=false \
	--ipolicy-disk-templates ext \
	--ipolicy-bounds-specs min:disk-size=1,cpu-count=1,disk-count=1,memory-size=1,nic-count=0,spindle-use=1/max:disk-size=1048576,cpu-count=8,disk-count=16,memory-size=32768,nic-count=8,spindle-use=12 \
	--ipolicy-std-specs disk-size=1024,cpu-count=1,disk-count=1,memory-size=128,nic-count=1,spindle-use=1 \
	"$CLUSTER"
# init brings the master IP up on the bridge through the node daemon; a
# verify right after it has been seen (once, in CI) to find it not there
# yet ("the master node cannot reach the master IP"): wait for it.
for i in $(seq 1 60); do
	ip -o addr show dev "$BRIDGE" | grep -q " $CLUSTER_IP/" && break
	[ "$i" -lt 60 ] || fail "master IP $CLUSTER_IP not on $BRIDGE 30 s after gnt-cluster init"
	sleep 0.5
done
# Ignored: ENODESETUP (a VM's /proc may lack /proc/sysrq-trigger) and
# ENODESSH (no sshd: --no-ssh-init, one node). This first verify checks
# Ganeti's own set-up of the namespace (not the provider): its TCP ping of
# the master IP, made while the node daemon is still settling, is given
# three tries.
for i in 1 2 3; do
	out=$(gnt-cluster verify --ignore-errors=ENODESETUP --ignore-errors=ENODESSH 2>&1) && break
	printf '%s\n' "$out" | grep -E 'ERROR|WARNING' | sed "s/^/   | try $i: /"
	[ "$i" -lt 3 ] || fail "gnt-cluster verify failed 3 times"
	sleep 2
done
echo "   gnt-cluster verify: ok"
capture diag gnt-storage diagnose
printf '%s\n' "$diag" | grep -q "status: valid" || fail "gnt-storage diagnose: provider archipelago is not valid"

# ---------------------------------------------------------------- helpers
# json EXPR CMD...: evaluates a Python expression over the JSON output of
# CMD (as j).
json() {
	local expr=$1
	shift
	"$@" | python3 -c "import json,sys; j=json.load(sys.stdin); print($expr)"
}
volumes() { json '"\n".join(sorted(v["name"] for v in j))' vlmc list --json; }
vol_size() { json 'j["size"]' vlmc info --json "$1"; }
vol_parent() { json 'j["parent"]' vlmc info --json "$1"; }
# new_volumes BEFORE AFTER: the names in AFTER that are not in BEFORE.
new_volumes() { comm -13 <(printf '%s\n' "$1") <(printf '%s\n' "$2") | sed '/^$/d'; }
# disk_dev INSTANCE N: the node's device of disk N, from activate-disks
# (node:disk/N:/dev/...).
disk_dev() {
	local out
	out=$(gnt-instance activate-disks "$1" 2>&1) || fail "gnt-instance activate-disks $1: $out"
	printf '%s\n' "$out" | sed 's/^/   | /' >&2
	printf '%s\n' "$out" | awk -F: -v d="disk/$2" '$2 == d {print $3}'
}
# mapped_volume DEV: the volume vlmc showmapped lists at DEV.
mapped_volume() { json '"".join(m["volume"] for m in j if m["device"] == "'"$1"'")' vlmc showmapped --json; }
mapped_pid() { json '"".join(str(m["pid"]) for m in j if m["device"] == "'"$1"'")' vlmc showmapped --json; }
# pattern BYTE: 4 MiB of the byte BYTE (two hex digits); every check
# uses its own byte, so data at a wrong offset is seen.
pattern() { head -c 4194304 /dev/zero | tr '\0' "\\$(printf '%03o' "0x$1")"; }
# write_at DEV MIB BYTE: writes pattern BYTE at offset MIB MiB, O_DIRECT.
write_at() {
	pattern "$3" | dd of="$1" bs=1M seek="$2" count=4 iflag=fullblock oflag=direct conv=notrunc status=none ||
		fail "write of pattern 0x$3 at $2 MiB of $1"
}
# check_at DEV MIB BYTE: reads 4 MiB at offset MIB MiB, O_DIRECT, and
# compares them with pattern BYTE.
check_at() {
	cmp <(dd if="$1" bs=1M skip="$2" count=4 iflag=direct status=none) <(pattern "$3") ||
		fail "$1 at $2 MiB does not hold pattern 0x$3"
	echo "   $1 at $2 MiB holds pattern 0x$3"
}
# check_uri VOL MIB BYTE: the same through the volume's NBD URI (the
# peers, not the device).
check_uri() {
	local uri out
	uri=$(vlmc uri "$1") || fail "vlmc uri $1"
	out=$(qemu-io -r -f raw -c "read -P 0x$3 $(($2 * 1048576)) 4M" "$uri" 2>&1) ||
		fail "qemu-io read of $uri: $out"
	case $out in
	*"Pattern verification failed"* | *"failed"*) fail "volume $1 at $2 MiB (through $uri) does not hold pattern 0x$3: $out" ;;
	esac
	echo "   volume $1 at $2 MiB holds pattern 0x$3 (read through $uri)"
}
# attach VOL: runs the provider's attach as Ganeti does (no arguments,
# cwd the provider directory, stdin closed, the environment Ganeti gives,
# stderr apart), within 30 s (a daemon holding stdout would hang it).
attach() {
	(cd "$PROVIDER_DIR" && env -i PATH="$PATH" LC_ALL=C ARCHIPELAGO_CONFIG="$ARCHIPELAGO_CONFIG" \
		VOL_NAME="$1" EXTP_PROVIDER=archipelago EXTP_ACCESS=kernelspace timeout 30 ./attach <&- 2>"$TMP/attach.err")
}
expect_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }

INST=inst1.ganeti.test
INST2=inst2.ganeti.test
INST3=inst3.ganeti.test
# -n: hail, the default allocator, refuses a one-node cluster (N+1).
ADD=(gnt-instance add -n "$NODE" -t ext -o noop -B memory=64M,vcpus=1 --no-nics --no-name-check --no-ip-check)

# ------------------------------------------------------------------ tests
step "gnt-instance add $INST: one ext disk of 1G on provider archipelago"
before=$(volumes)
run "${ADD[@]}" --disk 0:size=1G,provider=archipelago "$INST"
vol0=$(new_volumes "$before" "$(volumes)")
[ "$(printf '%s\n' "$vol0" | grep -c .)" = 1 ] || fail "want one new volume after gnt-instance add, vlmc list shows: ${vol0:-none}"
expect_eq "$(vol_size "$vol0")" $((1024 << 20)) "size of volume $vol0"
echo "   volume $vol0, 1 GiB"
run gnt-instance info "$INST"

step "write through the attached device, read back (device and NBD URI)"
dev0=$(disk_dev "$INST" 0)
[ -b "$dev0" ] || fail "disk/0 of $INST: '$dev0' is not a block device"
expect_eq "$(mapped_volume "$dev0")" "$vol0" "volume mapped at $dev0"
expect_eq "$(blockdev --getsize64 "$dev0")" $((1024 << 20)) "size of $dev0"
write_at "$dev0" 0 a1
write_at "$dev0" 1020 a2
check_at "$dev0" 0 a1
check_at "$dev0" 1020 a2
check_uri "$vol0" 0 a1
check_uri "$vol0" 1020 a2
expect_eq "$(json 'j["lock_owner"]' vlmc info --json "$vol0")" "$NODE" "lock owner of $vol0 (Ganeti opened it exclusively)"
echo "   volume $vol0 locked by $NODE"
t=$(date +%s%N)
out=$(attach "$vol0") || fail "attach of $vol0 by hand: $(cat "$TMP/attach.err")"
printf '%s\n' "$out" | sed 's/^/   attach| /'
echo "   attach of the mapped $vol0 took $((($(date +%s%N) - t) / 1000000)) ms"
expect_eq "$(printf '%s\n' "$out" | sed -n 1p)" "$dev0" "line 1 of attach's output"
expect_eq "$(printf '%s\n' "$out" | grep '^kvm:')" "kvm:$(vlmc uri "$vol0")" "kvm: line of attach's output"
if out=$(attach no-such-volume); then
	fail "attach of a volume that does not exist succeeded, printing '$out'"
fi
echo "   attach of a missing volume fails: $(cat "$TMP/attach.err")"

step "gnt-instance grow-disk $INST 0 512M (instance running)"
pid0=$(mapped_pid "$dev0")
run gnt-instance grow-disk "$INST" 0 512M
expect_eq "$(vol_size "$vol0")" $((1536 << 20)) "size of volume $vol0 after grow"
expect_eq "$(mapped_pid "$dev0")" "$pid0" "map daemon of $dev0 (a remap would change it)"
expect_eq "$(blockdev --getsize64 "$dev0")" $((1536 << 20)) "size of $dev0 after grow, without a remap"
write_at "$dev0" 1530 a3
check_at "$dev0" 1530 a3
check_at "$dev0" 1020 a2
check_uri "$vol0" 1530 a3

step "gnt-instance modify --disk add: a second disk of 256M"
before=$(volumes)
run gnt-instance modify --disk add:size=256M,provider=archipelago "$INST"
vol1=$(new_volumes "$before" "$(volumes)")
[ "$(printf '%s\n' "$vol1" | grep -c .)" = 1 ] || fail "want one new volume after --disk add, vlmc list shows: ${vol1:-none}"
expect_eq "$(vol_size "$vol1")" $((256 << 20)) "size of volume $vol1"
dev1=$(disk_dev "$INST" 1)
[ -b "$dev1" ] || fail "disk/1 of $INST: '$dev1' is not a block device"
expect_eq "$(mapped_volume "$dev1")" "$vol1" "volume mapped at $dev1"
write_at "$dev1" 100 b1
check_at "$dev1" 100 b1
check_uri "$vol1" 100 b1

step "gnt-instance shutdown, modify --disk 1:remove (the fake hypervisor cannot hotplug)"
run gnt-instance shutdown "$INST"
run gnt-instance modify --disk 1:remove "$INST"
volumes | grep -qxF "$vol1" && fail "volume $vol1 of the removed disk is still listed by vlmc list"
[ -z "$(mapped_volume "$dev1")" ] || fail "$dev1 is still mapped after the disk's removal"
echo "   volume $vol1 gone, $dev1 unmapped"

step "gnt-instance activate-disks, deactivate-disks, activate-disks"
dev0=$(disk_dev "$INST" 0)
[ -b "$dev0" ] || fail "disk/0 of $INST after activate-disks: '$dev0' is not a block device"
expect_eq "$(mapped_volume "$dev0")" "$vol0" "volume mapped at $dev0"
run gnt-instance deactivate-disks "$INST"
[ -z "$(json '" ".join(m["device"] for m in j if m["volume"] == "'"$vol0"'")' vlmc showmapped --json)" ] ||
	fail "volume $vol0 still mapped after deactivate-disks"
echo "   volume $vol0 unmapped"
dev0=$(disk_dev "$INST" 0)
[ -b "$dev0" ] || fail "disk/0 of $INST after activate-disks: '$dev0' is not a block device"
expect_eq "$(mapped_volume "$dev0")" "$vol0" "volume mapped at $dev0"
expect_eq "$(blockdev --getsize64 "$dev0")" $((1536 << 20)) "size of $dev0"
check_at "$dev0" 0 a1
check_at "$dev0" 1530 a3
run gnt-instance deactivate-disks "$INST"

step "vlmc snapshot of $vol0; gnt-instance add $INST2: disk 0 origin=<the snapshot>, disk 1 origin=<the volume>"
run vlmc snapshot "$vol0" gnt-test-snap
before=$(volumes)
# Smaller than the snapshot (1.5 GiB): refused, and nothing is left.
if out=$("${ADD[@]}" --disk 0:size=1G,provider=archipelago,origin=gnt-test-snap "$INST2" 2>&1); then
	fail "gnt-instance add with a disk smaller than its origin succeeded: $out"
fi
printf '%s\n' "$out" | tail -n 2 | sed 's/^/   refused| /'
expect_eq "$(volumes)" "$before" "vlmc list after the refused add"
run "${ADD[@]}" --disk 0:size=2G,provider=archipelago,origin=gnt-test-snap \
	--disk 1:size=1536M,provider=archipelago,origin="$vol0" "$INST2"
new=$(new_volumes "$before" "$(volumes)")
vol2=$(printf '%s\n' "$new" | grep '\.disk0$') || fail "no new volume for disk 0 of $INST2 (new: $new)"
vol2b=$(printf '%s\n' "$new" | grep '\.disk1$') || fail "no new volume for disk 1 of $INST2 (new: $new)"
expect_eq "$(vol_size "$vol2")" $((2048 << 20)) "size of volume $vol2"
expect_eq "$(vol_parent "$vol2")" gnt-test-snap "parent of volume $vol2"
expect_eq "$(vol_size "$vol2b")" $((1536 << 20)) "size of volume $vol2b"
echo "   $vol2: 2 GiB, clone of gnt-test-snap; $vol2b: 1.5 GiB, clone of a snapshot of $vol0 ($(vol_parent "$vol2b"))"
dev2=$(disk_dev "$INST2" 0)
dev2b=$(disk_dev "$INST2" 1)
[ -b "$dev2" ] || fail "disk/0 of $INST2: '$dev2' is not a block device"
[ -b "$dev2b" ] || fail "disk/1 of $INST2: '$dev2b' is not a block device"
expect_eq "$(blockdev --getsize64 "$dev2")" $((2048 << 20)) "size of $dev2"
for d in "$dev2" "$dev2b"; do
	check_at "$d" 0 a1
	check_at "$d" 1020 a2
	check_at "$d" 1530 a3
done
write_at "$dev2" 0 c1
check_at "$dev2" 0 c1
check_uri gnt-test-snap 0 a1
check_uri "$vol0" 0 a1
# verify looks at every instance's disks (attach again).
quiet gnt-cluster verify --ignore-errors=ENODESETUP --ignore-errors=ENODESSH

step "KVM instance $INST3 (QEMU, TCG): disk 0 through the device, disk 1 through the NBD URI (access=userspace)"
before=$(volumes)
run "${ADD[@]}" -H kvm --disk 0:size=256M,provider=archipelago --disk 1:size=256M,provider=archipelago,access=userspace "$INST3"
new=$(new_volumes "$before" "$(volumes)")
vol3a=$(printf '%s\n' "$new" | grep '\.disk0$') || fail "no new volume for disk 0 of $INST3 (new: $new)"
vol3b=$(printf '%s\n' "$new" | grep '\.disk1$') || fail "no new volume for disk 1 of $INST3 (new: $new)"
qpid=$(cat "/run/ganeti/kvm-hypervisor/pid/$INST3") || fail "no QEMU pidfile for $INST3"
kill -0 "$qpid" 2>/dev/null || fail "QEMU of $INST3 (pid $qpid) is not running"
qemu_cmdline=$(tr '\0' ' ' <"/proc/$qpid/cmdline")
# hmp CMD: QEMU's answer to a human monitor command (read up to the next
# prompt, with the terminal's echo and escapes removed).
hmp() {
	python3 - "/run/ganeti/kvm-hypervisor/ctrl/$INST3.monitor" "$1" <<'PY'
import re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
def upto_prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")
upto_prompt()
s.sendall(sys.argv[2].encode() + b"\n")
out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", upto_prompt()).replace("\r", "")
lines = out.split("\n")[1:]  # the first line is the echo of the command
print("\n".join(l for l in lines if l != "(qemu) ").strip())
PY
}
blocks=$(hmp "info block" | grep '^disk-') || fail "QEMU's info block lists no disk: $(hmp 'info block')"
printf '%s\n' "$blocks" | sed 's/^/   qemu| /'
# disk 0: Ganeti's link to the device attach printed; disk 1: the URI.
link0=$(printf '%s\n' "$blocks" | sed -n 1p | sed -E 's/^[^:]*: ([^ ]*) .*/\1/')
drive0=$(printf '%s\n' "$blocks" | sed -n 1p | cut -d' ' -f1)
drive1=$(printf '%s\n' "$blocks" | sed -n 2p | cut -d' ' -f1)
expect_eq "$(mapped_volume "$(readlink -f "$link0")")" "$vol3a" "volume behind QEMU's disk 0 ($link0)"
uri3b=$(vlmc uri "$vol3b")
printf '%s\n' "$blocks" | sed -n 2p | grep -qF ": $uri3b (raw)" || fail "QEMU's disk 1 is not the NBD URI $uri3b"
case $qemu_cmdline in *"file=$uri3b,"*cache=none*) ;; *) fail "QEMU's command line lacks file=$uri3b with cache=none: $qemu_cmdline" ;; esac
# QEMU writes through both (its monitor's qemu-io command, which answers
# nothing on success); the data is read back from outside.
for d in "0 $drive0 d0" "1 $drive1 d1"; do
	set -- $d
	out=$(hmp "qemu-io $2 \"write -P 0x$3 8M 4M\"") || fail "QEMU's monitor: $out"
	[ -z "$out" ] || fail "QEMU's write to disk $1 ($2): $out"
done
echo "   QEMU wrote 0xd0 to disk 0 and 0xd1 to disk 1 at 8 MiB"
check_at "$(readlink -f "$link0")" 8 d0
check_uri "$vol3a" 8 d0
check_uri "$vol3b" 8 d1

step "gnt-backup export of the running $INST3 (the provider's snapshot action)"
before=$(volumes)
run gnt-backup export --noshutdown -n "$NODE" "$INST3"
exp=/var/lib/ganeti/export/$INST3
ls -l "$exp" | sed 's/^/   | /'
# The dumps (named in config.ini) hold what QEMU wrote.
for d in "0 d0" "1 d1"; do
	set -- $d
	dump=$(sed -n "s/^disk$1_dump = //p" "$exp/config.ini")
	[ -n "$dump" ] && [ -f "$exp/$dump" ] || fail "no dump of disk $1 in $exp"
	check_at "$exp/$dump" 8 "$2"
done
expect_eq "$(volumes)" "$before" "vlmc list after the export (its snapshots removed)"

step "gnt-instance remove $INST3, $INST2 and $INST: their volumes go"
# No guest answers ACPI: do not wait for one.
run gnt-instance remove -f --shutdown-timeout=0 "$INST3"
run gnt-instance remove -f "$INST2"
run gnt-instance remove -f "$INST"
left=$(volumes)
for v in "$vol0" "$vol2" "$vol2b" "$vol3a" "$vol3b"; do
	printf '%s\n' "$left" | grep -qxF "$v" && fail "volume $v still listed by vlmc list after gnt-instance remove"
done
expect_eq "$left" gnt-test-snap "vlmc list after the removals"
run vlmc remove gnt-test-snap
[ -z "$(vlmc showmapped --json | python3 -c 'import json,sys; print(json.load(sys.stdin) or "")')" ] ||
	fail "devices still mapped after the removals: $(vlmc showmapped)"
# Every action but attach leaves a log named <action>-archipelago-<volume>-<time>.log.
echo "   provider runs logged in /var/log/ganeti/extstorage: $(ls /var/log/ganeti/extstorage | sed 's/-.*//' | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')"

step "gnt-cluster destroy"
run gnt-cluster destroy --yes-do-it
cluster_up=""
run /usr/lib/ganeti/daemon-util stop-all
step "stop the peers"
run archipelago stop
peers_up=""
end_step
