# SPDX-License-Identifier: MIT
# Tiny TAP helpers for shell tests: source it, call plan N, then ok/not_ok/skip.
tap_n=0
plan() { echo "1..$1"; }
ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $*"; }
not_ok() { tap_n=$((tap_n + 1)); echo "not ok $tap_n - $*"; tap_failed=1; }
skip() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1 # SKIP $2"; }
check() { # description command...
	d=$1; shift
	if out=$("$@" 2>&1); then ok "$d"; else not_ok "$d"; printf '%s\n' "$out" | sed 's/^/# /'; fi
}
tap_done() { exit "${tap_failed:-0}"; }
