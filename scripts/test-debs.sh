#!/bin/bash
# The Debian packages as an operator uses them, on this machine (root,
# Debian 12; systemd need not be PID 1):
#
#   scripts/test-debs.sh [DEBDIR]
#
# builds the packages (or takes archipelago*.deb from DEBDIR), installs them
# with apt-get (dependencies by apt), checks that nothing started, runs the
# INSTALLED programs with the INSTALLED configuration (archipelago start,
# vlmc create, qemu-io through `vlmc uri`), edits the conffile as an admin
# would, upgrades to the same packages rebuilt with a higher version (the
# edit and the volume survive; running peers are left running), checks that
# removal refuses while a volume is mapped and otherwise stops the peers,
# purges (configuration and logs go, the volume's data stays), then
# reinstalls to read the volume back and removes it. It cleans up after
# itself (purge; /var/lib/archipelago if the test made it), so it can run
# again.
#
# Needs: what scripts/build-debs.sh needs, apt, qemu-utils (qemu-io);
# lintian, if installed, checks the packages too.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
pkgs=(archipelago archipelago-rados archipelago-ganeti)
conf=/etc/archipelago/archipelago.conf
vol=debtest-$$
t0=$(date +%s)

step() { printf '[%3ds] %s\n' $(($(date +%s) - t0)) "$*"; }
fail() {
	echo "test-debs: FAIL: $*" >&2
	exit 1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }
apt_get() {
	apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef \
		-o Dpkg::Options::=--force-confold -y -q "$@" >"$tmp/apt.log" 2>&1 ||
		{
			cat "$tmp/apt.log" >&2
			return 1
		}
}
# Peers of the installed programs (not those of tests running from a build).
installed_peers() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case $exe in
		/usr/bin/filed | /usr/bin/mapperd | /usr/bin/vlmcd | /usr/bin/nbdd | /usr/bin/radosd | /usr/bin/archipelagod | /usr/lib/archipelago/rados/archipelagod) echo "${p#/proc/} $exe" ;;
		esac
	done
}
qemu_io() { # URI qemu-io-commands...: fails on any failed command
	local uri=$1 out
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	out=$(qemu-io -f raw "$uri" "${args[@]}" 2>&1) || fail "qemu-io $uri $*: $out"
	if grep -qiE 'fail|error|mismatch' <<<"$out"; then fail "qemu-io $uri $*: $out"; fi
}
data_files() { find /var/lib/archipelago -type f ! -path '*/locks/*' ! -name FORMAT 2>/dev/null | wc -l; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages)"
command -v qemu-io >/dev/null || fail "qemu-io is missing (apt-get install qemu-utils)"
for p in "${pkgs[@]}"; do
	if installed "$p"; then fail "$p is installed already: the test would remove it"; fi
done
[ ! -e /etc/archipelago ] || fail "/etc/archipelago exists (an installation not made by this test?)"
[ ! -e /dev/shm/archipelago ] || fail "/dev/shm/archipelago exists: peers of the default configuration run"
varlib_made=0
[ -e /var/lib/archipelago ] || varlib_made=1
extstorage_was=0 # the Ganeti test may have made it: leave it as found
[ ! -d /var/log/ganeti/extstorage ] || extstorage_was=1

tmp=$(mktemp -d /tmp/test-debs.XXXXXX)
cleanup() {
	local rc=$?
	set +e
	if [ -n "${lint_pid:-}" ]; then kill "$lint_pid" 2>/dev/null; fi
	if installed archipelago; then
		if [ -e /dev/shm/archipelago ]; then
			vlmc unmap "$vol" >/dev/null 2>&1
			vlmc remove "$vol" >/dev/null 2>&1
			archipelago stop >/dev/null 2>&1 || archipelago stop -f >/dev/null 2>&1
		fi
	fi
	for p in "${pkgs[@]}"; do
		if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv 'not-installed'; then
			apt-get -o DPkg::Lock::Timeout=300 purge -y -q "$p" >/dev/null 2>&1
		fi
	done
	if [ $varlib_made = 1 ]; then
		rm -rf /var/lib/archipelago
	else
		# A removed name keeps its epoch record (docs/maps.md): the test's.
		find /var/lib/archipelago/maps -name "${vol}_epoch" -delete 2>/dev/null
	fi
	if [ $extstorage_was = 1 ]; then mkdir -p /var/log/ganeti/extstorage; fi
	rm -rf "$tmp"
	if [ $rc = 0 ]; then step "PASS"; else step "FAIL (exit $rc)"; fi
}
trap cleanup EXIT

# 1. Packages.
if [ $# -ge 1 ]; then
	v1dir=$(cd "$1" && pwd)
	step "packages from $v1dir"
else
	step "building the packages"
	v1dir=$tmp/v1
	"$root/scripts/build-debs.sh" "$v1dir" -compression gzip >"$tmp/build.log" 2>&1 || {
		cat "$tmp/build.log" >&2
		fail "scripts/build-debs.sh"
	}
fi
debs=()
for p in "${pkgs[@]}"; do
	f=$(ls "$v1dir/${p}"_*_amd64.deb 2>/dev/null | head -1)
	[ -n "$f" ] || fail "no ${p}_*_amd64.deb in $v1dir"
	debs+=("$f")
done
v1=$(dpkg-deb -f "${debs[0]}" Version)
# lintian (when installed) meanwhile: no errors, no warnings.
lint_pid=
if command -v lintian >/dev/null; then
	lintian --fail-on error,warning "${debs[@]}" >"$tmp/lintian.log" 2>&1 &
	lint_pid=$!
fi
step "version $v1: $(du -h "${debs[@]}" | awk '{printf "%s %s  ", $1, $2}' | sed "s|$v1dir/||g")"

# 2. Install: nothing runs, nothing is enabled.
apt_get install "${debs[@]}" || fail "apt-get install ${debs[*]}"
for p in "${pkgs[@]}"; do installed "$p" || fail "$p is not installed after apt-get install"; done
[ -z "$(installed_peers)" ] || fail "the install started peers: $(installed_peers)"
if archipelago status >/dev/null 2>&1; then fail "archipelago status says the peers run after the install"; fi
dpkg-query -W -f='${Conffiles}\n' archipelago | grep -q " $conf " || fail "$conf is not a conffile"
for u in /lib/systemd/system/archipelago*.service; do
	[ -e "$u" ] || continue
	if ls /etc/systemd/system/*.wants/"$(basename "$u")" >/dev/null 2>&1; then fail "$(basename "$u") was enabled by the install"; fi
done
for a in create attach detach remove grow setinfo verify snapshot open close; do
	[ "$(readlink -f /usr/share/ganeti/extstorage/archipelago/$a)" = /usr/lib/archipelago/archipelago-extstorage ] ||
		fail "/usr/share/ganeti/extstorage/archipelago/$a does not lead to /usr/lib/archipelago/archipelago-extstorage"
done
[ -s /usr/share/ganeti/extstorage/archipelago/parameters.list ] || fail "parameters.list is missing"
[ -d /var/log/ganeti/extstorage ] || fail "/var/log/ganeti/extstorage was not made"
for p in archipelago vlmc xseg filed mapperd vlmcd nbdd nulld radosd archipelagod; do
	[ -x /usr/bin/$p ] || fail "/usr/bin/$p is missing"
	[ -s /usr/share/man/man1/$p.1.gz ] || fail "the man page of $p is missing"
done
[ -x /usr/lib/archipelago/rados/archipelagod ] || fail "archipelago-rados's archipelagod is missing"
cmp -s "$conf" <(archipelago config --default) || fail "$conf is not the commented default (archipelago config --default)"
step "installed; nothing started or enabled"

# 3. The installed programs, the installed configuration.
archipelago start >"$tmp/start.log" 2>&1 || {
	cat "$tmp/start.log" >&2
	fail "archipelago start"
}
archipelago status >"$tmp/status.log" 2>&1 || {
	cat "$tmp/status.log" >&2
	fail "archipelago status after start"
}
vlmc create "$vol" --size 64M >/dev/null || fail "vlmc create $vol"
uri=$(vlmc uri "$vol") || fail "vlmc uri $vol"
qemu_io "$uri" "write -P 0xa5 0 1M" "write -P 0x5a 63M 1M" "read -P 0xa5 0 1M"
ls /var/log/archipelago/*.log >/dev/null 2>&1 || fail "no logs under /var/log/archipelago"
if command -v logrotate >/dev/null; then
	logrotate -d /etc/logrotate.d/archipelago >"$tmp/logrotate.log" 2>&1 || {
		cat "$tmp/logrotate.log" >&2
		fail "logrotate -d /etc/logrotate.d/archipelago"
	}
fi
step "started; wrote $vol through $uri"

# 4. An admin edit of the conffile; upgrade to a rebuilt package.
sed -i '/^\[mapperd\]/,/^\[/ s/^log_level = 2$/log_level = 3/' "$conf"
mapperd_level() { archipelago config | awk '/^\[/ {s = $0} s == "[mapperd]" && $1 == "log_level" {print $3}'; }
[ "$(mapperd_level)" = 3 ] || fail "the edit of $conf ([mapperd] log_level = 3) did not take"
v2=$v1+upgrade1
mkdir -p "$tmp/progs" "$tmp/x"
for f in "${debs[@]}"; do dpkg-deb -x "$f" "$tmp/x"; done
cp "$tmp/x"/usr/bin/* "$tmp/x/usr/lib/archipelago/archipelago-extstorage" "$tmp/progs/"
mkdir -p "$tmp/progs/rados"
cp "$tmp/x/usr/lib/archipelago/rados/archipelagod" "$tmp/progs/rados/"
ARCHIPELAGO_DEB_VERSION=$v2 ARCHIPELAGO_DEBS_PROGRAMS=$tmp/progs \
	"$root/scripts/build-debs.sh" "$tmp/v2" -compression gzip >"$tmp/build2.log" 2>&1 || {
	cat "$tmp/build2.log" >&2
	fail "scripts/build-debs.sh (version $v2)"
}
step "rebuilt as $v2"
apt_get install "$tmp/v2"/archipelago*_"$v2"_amd64.deb || fail "apt-get install (upgrade to $v2)"
[ "$(dpkg-query -W -f='${Version}' archipelago)" = "$v2" ] || fail "archipelago is not at $v2 after the upgrade"
[ "$(mapperd_level)" = 3 ] || fail "the upgrade lost the admin's edit of $conf"
archipelago status >/dev/null 2>&1 || fail "the upgrade stopped the peers (it must leave them running)"
qemu_io "$uri" "read -P 0xa5 0 1M"
archipelago restart >"$tmp/restart.log" 2>&1 || {
	cat "$tmp/restart.log" >&2
	fail "archipelago restart after the upgrade"
}
qemu_io "$uri" "read -P 0xa5 0 1M" "read -P 0x5a 63M 1M"
step "upgraded to $v2: edit kept, peers kept running, $vol intact after restart"

# 5. Remove: refused while a volume is mapped; otherwise stops the peers.
dev=$(vlmc map "$vol") || fail "vlmc map $vol"
if apt_get remove "${pkgs[@]}" 2>/dev/null; then fail "apt-get remove went through while $vol was mapped on $dev"; fi
grep -q "volumes are still mapped" "$tmp/apt.log" || fail "the removal failed, but not because $vol is mapped: $(cat "$tmp/apt.log")"
installed archipelago || fail "the refused removal removed archipelago"
archipelago status >/dev/null 2>&1 || fail "the refused removal stopped some peers"
vlmc unmap "$vol" >/dev/null || fail "vlmc unmap $vol"
before=$(data_files)
apt_get remove "${pkgs[@]}" || fail "apt-get remove"
[ -z "$(installed_peers)" ] || fail "peers still run after the removal: $(installed_peers)"
[ -f "$conf" ] || fail "remove (not purge) deleted $conf"
step "removal refused while mapped, then stopped the peers ($before data files)"

# 6. Purge: configuration and logs go, the volumes stay.
apt_get purge "${pkgs[@]}" || fail "apt-get purge"
[ ! -e /etc/archipelago ] || fail "/etc/archipelago is still there after the purge: $(ls -A /etc/archipelago)"
[ ! -e /var/log/archipelago ] || fail "/var/log/archipelago is still there after the purge"
[ "$(data_files)" = "$before" ] || fail "the purge changed /var/lib/archipelago: $before data files before, $(data_files) after"
step "purged; /var/lib/archipelago kept ($(data_files) data files)"

# 7. Reinstall: the volume reads back; then remove it and purge again.
apt_get install "$tmp/v2"/archipelago_"$v2"_amd64.deb || fail "apt-get install (again)"
archipelago start >/dev/null 2>&1 || fail "archipelago start (after reinstall)"
qemu_io "$uri" "read -P 0xa5 0 1M" "read -P 0x5a 63M 1M"
vlmc remove "$vol" >/dev/null || fail "vlmc remove $vol"
archipelago stop >/dev/null || fail "archipelago stop"
apt_get purge archipelago || fail "apt-get purge (again)"
step "reinstalled: $vol read back after the purge, then removed"

if [ -n "$lint_pid" ]; then
	if ! wait "$lint_pid"; then
		lint_pid=
		grep -v '^running with root' "$tmp/lintian.log" >&2
		fail "lintian found errors or warnings"
	fi
	lint_pid=
	step "lintian: no errors, no warnings"
else
	step "lintian is not installed: not run"
fi
