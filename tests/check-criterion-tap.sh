#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/criterion-tap.sh, make check's LOG_COMPILER, around stand-in
# programs: a "Criterion" one that writes its TAP where CRITERION_OUTPUTS
# says and complains on standard error, as a sanitizer does, and one that
# prints its own TAP.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
wrap=$top_srcdir/tests/criterion-tap.sh
plan 5

cat >"$tmp/crit" <<'PROG'
#!/bin/sh
case $CRITERION_OUTPUTS in tap:-) exit 9 ;; tap:*) f=${CRITERION_OUTPUTS#tap:} ;; *) exit 8 ;; esac
echo "$f" >"$(dirname "$0")/file"
printf '1..1\nnot ok 1 - planted\n' >"$f"
echo "runtime error: planted" >&2
exit 3
PROG
cat >"$tmp/own" <<'PROG'
#!/bin/sh
printf '1..1\nok 1 - own\n'
PROG
chmod +x "$tmp/crit" "$tmp/own"

st=0
TMPDIR=$tmp sh "$wrap" "$tmp/crit" >"$tmp/out" 2>"$tmp/err" || st=$?
check "Criterion's TAP comes out on standard output, from a file, not tap:-" \
	sh -c 'printf "1..1\nnot ok 1 - planted\n" | cmp -s - "$1" || { cat "$1"; exit 1; }' sh "$tmp/out"
check "what the program says on standard error stays there, for the log" \
	grep -q "runtime error: planted" "$tmp/err"
check "the program's exit status is the wrapper's" test "$st" = 3
check "the file is gone afterwards" sh -c '[ -s "$1" ] && ! test -e "$(cat "$1")"' sh "$tmp/file"
check "a program with its own TAP passes through unchanged" \
	sh -c 'sh "$1" "$2" | grep -qx "ok 1 - own"' sh "$wrap" "$tmp/own"
tap_done
