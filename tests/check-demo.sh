#!/bin/sh
# SPDX-License-Identifier: MIT
# The README's first command does what the README says: scripts/demo (on an
# existing build, --no-build) replays a 64 GiB TDX boot on the model and shows
# per-page needing more than type1's 65,535 mappings while auto needs 1,536;
# and, where the guest tests run (DEMO_VM=yes), scripts/demo --vm replays it on
# the real type1 and iommufd in the vIOMMU guest.  The guest run uses the
# shared library of this build tree, wherever the tree is (a tree under /tmp
# once was hidden in the guest by init's tmpfs).
. "$top_srcdir/tests/tap.sh"
demo=$top_srcdir/scripts/demo
CVMDMA_BUILD_DIR=$(cd "$top_builddir" && pwd)
export CVMDMA_BUILD_DIR
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# row FILE POLICY [SECTION]: the demo table's row of POLICY, in the section after
# the line SECTION (or the whole output without one).
row() { awk -v s="$3" -v p="$2" 'BEGIN { on = s == "" }
	$0 == s { on = 1 } on && $1 == p && $4 ~ /^[0-9,]+$/ { print; exit }' "$1"; }
# live FILE POLICY [SECTION]: that row's live mappings, digits only.
live() { row "$@" | awk '{ gsub(/[^0-9]/, "", $4); print $4 }'; }

"$demo" --no-build >"$tmp/model" 2>&1
check "scripts/demo exits 0" test $? -eq 0
check "scripts/demo: per-page ends with 264,022 mappings, flagged over type1's limit" \
	test "$(row "$tmp/model" per-page | awk '{ print $4 "/" $5 }')" = "264,022/264,022!"
check "scripts/demo: auto ends with 1,536 mappings, unbounded with 1,024" \
	test "$(live "$tmp/model" auto)/$(live "$tmp/model" unbounded)" = 1536/1024
[ -n "${tap_failed:-}" ] && sed 's/^/# /' "$tmp/model"

if [ "${DEMO_VM:-no}" != yes ]; then
	skip "scripts/demo --vm" "the guest tests are disabled (--disable-vm-tests)"
else
	st=0
	what="qemu-run --check failed"
	"$top_srcdir/tests/vm/qemu-run" --check >"$tmp/why" 2>&1 || st=$?
	[ $st -ne 0 ] || what="guest kernel A did not build"
	[ $st -ne 0 ] || "$top_srcdir/tests/vm/build-kernel" A >/dev/null 2>"$tmp/why" || st=$?
	if [ $st -eq 77 ]; then
		skip "scripts/demo --vm" "$(tail -n 1 "$tmp/why" | tr -d '#')"
	elif [ $st -ne 0 ]; then
		not_ok "scripts/demo --vm: $what"
		sed 's/^/# /' "$tmp/why"
	else
		"$demo" --no-build --vm >"$tmp/vm" 2>&1
		st=$?
		check "scripts/demo --vm exits 0 (type1 and iommufd replays ran in the guest)" \
			test $st -eq 0
		for b in type1 iommufd; do
			pp=$(live "$tmp/vm" per-page "-- $b:")
			au=$(live "$tmp/vm" auto "-- $b:")
			check "scripts/demo --vm: on the real $b, auto holds fewer mappings than per-page (${au:-none} vs ${pp:-none})" \
				test "${au:-0}" -gt 0 -a "${pp:-0}" -gt "${au:-0}"
		done
		[ $st -eq 0 ] || sed 's/^/# /' "$tmp/vm"
	fi
fi
plan "$tap_n"
tap_done
