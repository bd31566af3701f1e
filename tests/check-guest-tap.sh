#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/vm/guest-tap.awk, which turns the guest's console into make check's
# results, on made-up consoles: what must pass passes, and each way a guest
# program can go wrong without saying so (a crash, a wrong count, a kernel
# warning, a dead guest) is a "not ok".  No guest is booted.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
awkf=$top_srcdir/tests/vm/guest-tap.awk
plan 22

# console NAMES: the made-up console on stdin, through guest-tap.awk into
# $tmp/out; its exit status into $tmp/st.
console() {
	st=0
	awk -v kernel=A -v names="$1" -v trace="${trace:-}" -f "$awkf" >"$tmp/out" 2>&1 || st=$?
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
# The vIOMMU's invalidations (qemu-run --trace) against guest-iotlb's claims:
# window 1 holds one invalidation of the hole, window 2 one of the whole
# 2 MiB around it, window 3 none; domain 5's are another device's.
inv() { echo "42@1.5:vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x$1 addr 0x$2 mask 0x$3"; }
{ inv 2 80000000 0; inv 5 40000000 9; inv 2 40001000 0; inv 2 80001000 0
  inv 2 80002000 0; inv 2 40000000 9; inv 2 80003000 0; inv 2 80004000 0
  echo '42@1.6:vtd_inv_desc_iotlb_domain iotlb invalidate whole domain 0x5'
  inv 2 80005000 0; inv 2 80006000 0
  echo '42@1.7:vtd_inv_desc_iotlb_domain iotlb invalidate whole domain 0x2'
  inv 2 80007000 0
  # 8: one page of four; 10: four pages in two invalidations, the first
  # given unaligned (the vIOMMU ignores the address bits below its size);
  # 12: a global flush; 14: a marker in domain 7; 16: an unknown event.
  inv 2 80008000 0; inv 2 40100000 0; inv 2 80009000 0
  inv 2 8000a000 0; inv 2 40101000 1; inv 2 40102000 1; inv 2 8000b000 0
  inv 2 8000c000 0; echo '42@1.8:vtd_inv_desc_iotlb_global iotlb invalidate global'
  inv 2 8000d000 0
  inv 7 8000e000 0; inv 2 8000f000 0
  inv 2 80010000 0; echo '42@1.9:vtd_inv_desc_iotlb_frob iotlb frobnicate domain 0x2'
  inv 2 80011000 0; } >"$tmp/trace"
# claim1 BEGIN KIND: one program whose one result claims KIND for pages
# 0x40100000-0x40103fff between the markers BEGIN and BEGIN + 0x1000.
claim1() {
	echo "$boot"
	prog a 0 '' '1..1' \
		"ok 1 - four pages # IOTLB 0x$1 0x$(printf %x $((0x$1 + 4096))) 0x40100000 0x40104000 $2"
}
claims() { # KIND1 KIND2 KIND3 [KIND4]
	echo "$boot"
	prog a 0 '' '1..4' \
		"ok 1 - hole # IOTLB 0x80000000 0x80001000 0x40001000 0x40002000 $1" \
		"ok 2 - hole again # IOTLB 0x80002000 0x80003000 0x40001000 0x40002000 $2" \
		"ok 3 - share # IOTLB 0x80004000 0x80005000 0x40001000 0x40002000 $3" \
		"ok 4 - flush # IOTLB 0x80006000 0x80007000 0x40001000 0x40002000 ${4:-only}"
}
claims only beyond none none | trace=$tmp/trace console a
check "vIOMMU claims the trace bears out pass, each with what the trace showed" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && [ "$(grep -c "^not ok" "$2")" = 1 ] &&
		grep -q "^ok 2 - a: hole (vIOMMU: 1 invalidation in domain 2, 1 inside \[0x40001000, 0x40002000), 0 beyond)$" "$2" &&
		grep -q "^ok 3 - a: hole again (vIOMMU: 1 invalidation in domain 2, 0 inside" "$2" &&
		grep -q "^ok 4 - a: share (vIOMMU: 0 invalidations" "$2" &&
		grep -q "^not ok 5 - a: flush (vIOMMU: 1 invalidation in domain 2, 0 inside" "$2"; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
claims beyond only only | trace=$tmp/trace console a
check "a hole claimed hitless fails where the 2 MiB around it was invalidated, a remap claimed fails where only the hole was, a hole claimed where nothing was invalidated fails, and so does one after a whole-domain flush" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && grep -q "^not ok 2 - a: hole (" "$2" &&
		grep -q "^not ok 3 - a: hole again (" "$2" && grep -q "^not ok 4 - a: share (" "$2" &&
		grep -q "^not ok 5 - a: flush (" "$2"; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
{ claims only beyond none; } | sed 's/0x80002000 0x80003000/0x80002000 0x8001f000/' |
	trace=$tmp/trace console a
check "a claim whose end marker is not in the trace fails, and the claims after it are checked" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && grep -q "^ok 2 - a: hole (" "$2" &&
		grep -q "^not ok 3 - a: hole again (the marker invalidation of 0x8001f000 is not in the trace after 0x80002000)$" "$2" &&
		grep -q "^ok 4 - a: share (" "$2"; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
claims only beyond none none | console a
check "without a trace the claims are SKIPs" \
	sh -c 'verdict() { [ "$(cat "$1")" = 0 ] && [ "$(grep -c "^ok [2-5] - a: .* # SKIP no vIOMMU trace" "$2")" = 4 ]; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
: >"$tmp/empty"
claims only beyond none none | trace=$tmp/empty console a
check "a trace that holds no invalidation fails every claim" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && [ "$(grep -c "^not ok [2-5] - a: .*holds no vtd_inv_desc_iotlb_\* event)$" "$2")" = 4 ]; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
claim1 80008000 only | trace=$tmp/trace console a
check "'only' fails where some of its pages were not invalidated, and says what was" \
	sh -c 'grep -q "^not ok 2 - a: four pages (.* 1 inside .*, 3 of its pages not invalidated: 0x40100000+4K)$" "$1" ||
		{ cat "$1"; exit 1; }' sh "$tmp/out"
claim1 8000a000 only | trace=$tmp/trace console a
check "'only' passes where invalidations aligned to their size cover every page" verdict 0 0
claim1 8000c000 none | trace=$tmp/trace console a
check "a global flush between the markers fails 'none', and says so" \
	sh -c 'grep -q "^not ok 2 - a: four pages (vIOMMU: 1 invalidation in domain 2, 0 inside .*, 1 beyond: global)$" "$1" ||
		{ cat "$1"; exit 1; }' sh "$tmp/out"
claim1 8000e000 none | trace=$tmp/trace console a
check "an end marker in another domain than the begin marker's is not found" \
	sh -c 'grep -q "^not ok 2 - a: four pages (the marker invalidation of 0x8000f000 is not in the trace after 0x8000e000)$" "$1" ||
		{ cat "$1"; exit 1; }' sh "$tmp/out"
claim1 80010000 none | trace=$tmp/trace console a
check "an invalidation event not known here fails 'none' (and is never taken for one beyond)" \
	sh -c 'grep -q "^not ok 2 - a: four pages (.*, 1 of a kind not known here)$" "$1" ||
		{ cat "$1"; exit 1; }' sh "$tmp/out"
{ echo "$boot"; prog a 1 '' 'Bail out! no device'; } | console a
check "a program that bails out before any result is one failure, with its reason" \
	sh -c 'verdict() { [ "$(cat "$1")" = 1 ] && [ "$(grep -c "^not ok" "$2")" = 1 ] &&
		grep -q "^not ok 2 - a: Bail out! no device$" "$2"; }
		verdict "$1" "$2" || { cat "$2"; exit 1; }' sh "$tmp/st" "$tmp/out"
tap_done
