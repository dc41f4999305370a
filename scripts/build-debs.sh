#!/bin/bash
# Build the Debian packages archipelago, archipelago-rados and
# archipelago-ganeti into OUTDIR (Debian 12, no network needed once the Go
# modules are in the module cache):
#
#   scripts/build-debs.sh OUTDIR
#
# Needs: go, gcc (and binutils), librados-dev (radosd is built with -tags ceph), help2man
# (man pages from each program's --help), dpkg-dev (dpkg-shlibdeps: the
# Depends on shared libraries), git.
# ARCHIPELAGO_DEBS_PROGRAMS=DIR packages the programs in DIR (archipelago,
# vlmc, ..., radosd, archipelago-extstorage) instead of building them.
#
# The version comes from `git describe` (tags v1.2.3): 1.2.3 on the tag,
# 1.2.3+git5.gabc1234 five commits later, 0.0.0+git183.gabc1234 in a tree
# without tags; +dirty when the tree has uncommitted changes.
# ARCHIPELAGO_DEB_VERSION overrides it (scripts/test-debs.sh uses that to
# build an upgrade). The packages are written by internal/debs (nfpm), a
# module of its own.
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 OUTDIR [internal/debs flags, e.g. -ganeti-params FILE]" >&2
	exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
shift

for tool in go gcc objcopy git help2man dpkg-shlibdeps; do
	if ! command -v "$tool" >/dev/null; then
		echo "build-debs: $tool is missing (apt-get install golang gcc git help2man dpkg-dev librados-dev)" >&2
		exit 1
	fi
done

debian_version() {
	local desc n hash tag v dirty=""
	if desc=$(git -C "$root" describe --tags --match 'v[0-9]*' --long 2>/dev/null); then
		# v1.2.3-5-gabc1234
		hash=${desc##*-}
		desc=${desc%-*}
		n=${desc##*-}
		tag=${desc%-*}
		tag=${tag#v}
		tag=${tag//-/\~} # v1.0-rc1 sorts before 1.0: 1.0~rc1
		if [ "$n" = 0 ]; then v=$tag; else v="$tag+git$n.$hash"; fi
	else
		n=$(git -C "$root" rev-list --count HEAD)
		hash=g$(git -C "$root" rev-parse --short=7 HEAD)
		v="0.0.0+git$n.$hash"
	fi
	if ! git -C "$root" diff-index --quiet HEAD -- 2>/dev/null; then
		dirty=+dirty
	fi
	echo "$v$dirty"
}

version=${ARCHIPELAGO_DEB_VERSION:-$(debian_version)}
if ! dpkg --validate-version "$version"; then
	echo "build-debs: $version is not a Debian version" >&2
	exit 1
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}

work=$(mktemp -d /tmp/build-debs.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin/rados" "$work/gen/man" "$work/gen/completion" "$work/shlibs/debian"

programs=(archipelago vlmc xseg filed mapperd vlmcd nbdd nulld archipelagod)
cd "$root"
if [ -n "${ARCHIPELAGO_DEBS_PROGRAMS:-}" ]; then
	# Package programs built before (scripts/test-debs.sh: the upgrade).
	for p in "${programs[@]}" radosd archipelago-extstorage rados/archipelagod; do
		cp "$ARCHIPELAGO_DEBS_PROGRAMS/$p" "$work/bin/$p"
	done
else
	# PIE with the default cgo setting, as the tests build them, linked by
	# gcc for full RELRO (-z now); stripped, without gcc's .comment.
	gobuild=(go build -trimpath -buildmode=pie "-ldflags=-s -w -buildid= -linkmode=external -extldflags=-Wl,-z,relro,-z,now")
	"${gobuild[@]}" -o "$work/bin/" "${programs[@]/#/./cmd/}"
	"${gobuild[@]}" -tags ceph -o "$work/bin/radosd" ./cmd/radosd
	# archipelago-rados's host process, that of archipelago runs in its
	# place for a rados_blocker role (cmd/archipelagod).
	"${gobuild[@]}" -tags ceph -o "$work/bin/rados/archipelagod" ./cmd/archipelagod
	"${gobuild[@]}" -o "$work/bin/archipelago-extstorage" ./cmd/archipelago-extstorage
	for p in "${programs[@]}" radosd archipelago-extstorage rados/archipelagod; do
		objcopy --remove-section=.comment "$work/bin/$p"
	done
fi

"$work/bin/archipelago" config --default >"$work/gen/archipelago.conf"

# Man pages: help2man over each program's --help; for programs with
# subcommands, a COMMANDS section holding every subcommand's --help.
declare -A what=(
	[archipelago]="start, stop and watch the Archipelago peers"
	[vlmc]="create, snapshot, clone, map and remove Archipelago volumes"
	[xseg]="inspect and manage an XSEG shared-memory segment"
	[filed]="Archipelago file blocker peer"
	[mapperd]="Archipelago mapper peer (volume maps)"
	[vlmcd]="Archipelago volume composer peer"
	[nbdd]="Archipelago NBD block endpoint peer"
	[nulld]="Archipelago null peer (answers every request at once)"
	[radosd]="Archipelago RADOS blocker peer"
	[archipelagod]="Archipelago host process (several peers in one process)"
)
roff_text() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
# help2man reads `PROG --help` through a wrapper that gives it cobra's help
# in the shape it knows: "Usage: PROG ..." on one line (the SYNOPSIS), and
# without the Examples block, which goes verbatim into an EXAMPLES section.
usage_oneline='
	/^Usage:$/ { usage = 1; first = 1; next }
	usage && /^  / { sub(/^  /, ""); print (first ? "Usage: " : "   or: ") $0; first = 0; next }
	usage { usage = 0 }
	/^Examples:$/ { skip = 1; next }
	skip && /^[A-Z][A-Za-z ]*:$/ { skip = 0 }
	skip { next }
	{ print }'
examples='
	/^Examples:$/ { on = 1; next }
	on && /^[A-Z][A-Za-z ]*:$/ { exit }
	on { print }'
mkdir -p "$work/h2m"
for p in "${programs[@]}" radosd; do
	bin=$work/bin/$p
	inc=$work/gen/$p.h2m
	"$bin" --help | awk "$usage_oneline" >"$work/gen/$p.help"
	printf '#!/bin/sh\ncat %q\n' "$work/gen/$p.help" >"$work/h2m/$p"
	chmod +x "$work/h2m/$p"
	ex=$("$bin" --help | awk "$examples")
	if [ -n "${ex//[[:space:]]/}" ]; then
		printf '[EXAMPLES]\n.nf\n%s\n.fi\n' "$(printf '%s\n' "$ex" | roff_text)" >"$inc"
	else
		: >"$inc"
	fi
	subs=$("$bin" --help | awk '/^Available Commands:/ {on=1; next} on && /^$/ {exit} on {print $1}' | grep -vx 'completion\|help' || true)
	if [ -n "$subs" ]; then
		echo "[COMMANDS]" >>"$inc"
		for s in $subs; do
			{
				echo ".SS \"$p $s\""
				echo ".nf"
				"$bin" "$s" --help | roff_text
				echo ".fi"
			} >>"$inc"
		done
	fi
	printf '[SEE ALSO]\narchipelago(1), vlmc(1), /etc/archipelago/archipelago.conf\n' >>"$inc"
	help2man --no-info --section=1 --version-string="$version" \
		--name="${what[$p]}" --include="$inc" --output="$work/gen/man/$p.1" "$work/h2m/$p"
	if "$bin" --help | grep -q '^  completion '; then
		"$bin" completion bash >"$work/gen/completion/$p"
	fi
done

# Depends on shared libraries, per package, as dpkg-shlibdeps computes them.
printf 'Source: archipelago\n\nPackage: archipelago\nArchitecture: any\n' >"$work/shlibs/debian/control"
shlibs() {
	(cd "$work/shlibs" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}
deps_main=$(shlibs "${programs[@]/#/$work/bin/}")
deps_rados=$(shlibs "$work/bin/radosd" "$work/bin/rados/archipelagod")
deps_ganeti=$(shlibs "$work/bin/archipelago-extstorage")

cd internal/debs
go run . -root "$root" -version "$version" -bin "$work/bin" -gen "$work/gen" -out "$out" \
	-shlibs-archipelago "$deps_main" -shlibs-archipelago-rados "$deps_rados" \
	-shlibs-archipelago-ganeti "$deps_ganeti" "$@"
