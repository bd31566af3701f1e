#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/vm/guest-tap.awk, which turns the guest's console into make check's
# results, on made-up consoles: what must pass passes, and each way a guest
# program can go wrong without saying so (a crash, a wrong count, a kernel
# warning, a dead guest) is a "not ok".  No guest is booted.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
awkf=$top_srcdir/tests/vm/guest-tap.awk
plan 11

# console NAMES: the made-up console on stdin, through guest-tap.awk into
# $tmp/out; its exit status into $tmp/st.
console() {
	st=0
	awk -v kernel=A -v names="$1" -f "$awkf" >"$tmp/out" 2>&1 || st=$?
	echo "$st" >"$tmp/st"
}
boot='@@CVM-BOOT ok 0000:00:03.0 7 /dev/vfio/devices/vfio0 1.50'
# prog NAME STATUS DMESG OUTPUT...: one program's part of the console.
prog() {
	name=$1 st=$2 dm=$3; shift 3
	echo "@@CVM-BEGIN $name"
	printf '%s\n' "$@"
	echo "@@CVM-END $name"
	echo "@@CVM-RESULT $name $st"
	echo "@@CVM-DMESG-BEGIN $name"
	[ -z "$dm" ] || printf '%s\n' "$dm"
	echo "@@CVM-DMESG-END $name"
}
# verdict WANT: the run passed (0) or failed (1), and the counts of "ok" and
# "not ok" lines are right for it; prints the output when not.
verdict() { # WANT NOT_OKS
	[ "$(cat "$tmp/st")" = "$1" ] && [ "$(grep -c '^not ok' "$tmp/out")" = "$2" ] &&
		grep -q "^1\.\.$(grep -c '^\(not \)\{0,1\}ok ' "$tmp/out")\$" "$tmp/out" ||
		{ cat "$tmp/out"; return 1; }
}

{ echo "$boot"; prog a 0 'DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0x1000' \
	'1..2' 'ok 1 - one' 'ok 2 - two'; prog b 0 '' '1..0 # SKIP not here'
  echo '@@CVM-DONE 9.0'; } | console "a b"
check "a clean run passes: harness, 2 results, a whole-program skip; a DMAR fault is no failure" \
	verdict 0 0
check "each result is reported under its program's name" \
	sh -c 'grep -q "^ok 2 - a: one$" "$1" && grep -q "^ok 4 - b # SKIP not here$" "$1"' \
	sh "$tmp/out"

{ echo "$boot"; prog a 0 '' '1..2' 'ok 1 - one' 'ok 1 - one again'; } | console a
check "a result numbered like the one before it fails" verdict 1 1

{ echo "$boot"; prog a 0 '' '1..2' 'ok 1 - one' 'ok 3 - three'; } | console a
check "a result whose number skips one fails" verdict 1 1

{ echo "$boot"; prog a 0 '' '1..3' 'ok 1 - one' 'ok 2 - two'; } | console a
check "fewer results than planned fails" verdict 1 1

{ echo "$boot"; prog a 139 '' '1..0 # SKIP not here'; } | console a
check "a program that skips everything, then crashes, fails" verdict 1 1

{ echo "$boot"; prog a 0 'WARNING: CPU: 1 PID: 42 at drivers/iommu/iommufd/pages.c:1 x' \
	'1..1' 'ok 1 - one'; } | console a
check "a kernel WARNING logged while a program ran fails it" verdict 1 1

{ echo "$boot"; prog a 137 '' '1..2' 'ok 1 - one'; } | console a
check "a program killed on its timeout (137) fails" verdict 1 1

{ echo "$boot"; echo '@@CVM-BEGIN a'; echo '1..2'; echo 'ok 1 - one';
  echo '@@CVM-QEMU-EXIT 124'; } | console "a b"
check "a guest that dies mid-program fails that program and the next, naming QEMU's status" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && [ "$(grep -c "^not ok" "$2")" = 2 ] &&
		grep -q "qemu-run exit 124" "$2"; }; verdict "$1" "$2" || { cat "$2"; exit 1; }' \
	sh "$tmp/st" "$tmp/out"

{ echo "$boot"; prog a 0 '' '1..1' 'ok 1 - one'; echo '@@CVM-GCOV-BEGIN'
  echo 'H4sIAAAAAAAAA+3OMQ6AIBAF0T3KngA='; echo 'not ok 1 - base64 that looks like TAP'
  echo '@@CVM-GCOV-END'; echo '@@CVM-DONE 9.0'; } | console a
check "a coverage build's counts after the last program are no results and no console lines" \
	sh -c 'verdict() { [ "$(cat "$1")" = 0 ] && ! grep -q "console:\|H4sI\|not ok" "$2" &&
		grep -q "^# coverage counts from the guest: 2 lines" "$2"; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"

printf '%s\n' '@@CVM-BOOT fail edu not found' | console a
check "a guest without edu bound fails the harness test and every program" verdict 1 2
tap_done
