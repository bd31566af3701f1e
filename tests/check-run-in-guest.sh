#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/vm/run-in-guest around a stand-in QEMU (no guest is booted): the
# program's output and status come through, a guest that reports nothing is
# 125, a missing QEMU is 77, and a signal while QEMU runs stops it at once.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plan 7

mkdir "$tmp/vm"
cp "$top_srcdir/tests/vm/run-in-guest" "$tmp/vm/"
chmod u+w "$tmp/vm/run-in-guest"   # make distcheck's source tree is read-only
# The stand-ins: an image and an initramfs that are never read, and a QEMU
# whose console STUB_MODE chooses.
printf '#!/bin/sh\necho "$CVMDMA_STUB/bzImage"\n' >"$tmp/vm/build-kernel"
printf '#!/bin/sh\nexit 0\n' >"$tmp/vm/mkinitramfs"
cat >"$tmp/vm/qemu-run" <<'STUB'
#!/bin/sh
[ "$1" != --check ] || exit "${STUB_CHECK:-0}"
echo $$ >"$CVMDMA_STUB/pid"
case $STUB_MODE in
result)
	printf '@@CVM-BOOT ok\n@@CVM-BEGIN prog\nhello\n@@CVM-END prog\n'
	printf '@@CVM-RESULT prog 3\n'
	;;
silent)
	echo 'Kernel panic - not syncing'
	exit 9
	;;
hang)
	trap 'echo TERM >"$CVMDMA_STUB/term"; exit 143' TERM
	printf '@@CVM-BOOT ok\n@@CVM-BEGIN prog\nhello\n'
	while :; do sleep 1; done
	;;
esac
STUB
chmod +x "$tmp/vm/build-kernel" "$tmp/vm/mkinitramfs" "$tmp/vm/qemu-run"
printf '#!/bin/sh\n' >"$tmp/prog"
CVMDMA_STUB=$tmp
export CVMDMA_STUB

# rig MODE [STUB_CHECK]: run-in-guest on $tmp/prog; status in $tmp/st.
rig() {
	st=0
	STUB_MODE=$1 STUB_CHECK=${2:-0} "$tmp/vm/run-in-guest" --timeout 60 "$tmp/prog" \
		>"$tmp/out" 2>"$tmp/err" || st=$?
	echo "$st" >"$tmp/st"
}
status_is() { [ "$(cat "$tmp/st")" = "$1" ] || { cat "$tmp/st" "$tmp/out" "$tmp/err"; return 1; }; }

rig result
check "the program's output and exit status come through" \
	sh -c '[ "$(cat "$1/st")" = 3 ] && [ "$(cat "$1/out")" = hello ] ||
		{ cat "$1/st" "$1/out" "$1/err"; exit 1; }' sh "$tmp"
rig silent
check "a guest that reports no result is 125, and says how QEMU ended" \
	sh -c '[ "$(cat "$1/st")" = 125 ] && grep -q "no result (qemu-run exit 9)" "$1/err" &&
		grep -q "Kernel panic" "$1/err" || { cat "$1/st" "$1/err"; exit 1; }' sh "$tmp"
rig result 77
check "no QEMU is a skip (77)" status_is 77
rig result 1
check "a broken qemu-run --check is a failure (125), not a skip" status_is 125

# A signal to run-in-guest alone while QEMU runs (each made deliverable: a
# shell starts a background job with INT ignored, and a run under nohup
# has HUP ignored, which a shell cannot trap): the program's output so
# far has come through (mawk would hold it back), the stand-in hears a TERM,
# and run-in-guest ends with 128 + the signal within seconds, not at
# --timeout, without calling the stop a guest failure.
sig_case() { # SIGNAL STATUS
	rm -f "$tmp/pid" "$tmp/term"
	# Emptied here, not only by the job's redirection: until the job runs,
	# the last case's "hello" would be found, and the signal sent before
	# run-in-guest started QEMU.
	: >"$tmp/out"
	STUB_MODE=hang env --default-signal=INT,HUP,TERM "$tmp/vm/run-in-guest" --timeout 60 "$tmp/prog" \
		>"$tmp/out" 2>"$tmp/err" &
	rp=$!
	i=0
	while ! grep -q hello "$tmp/out" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	streamed=no
	! grep -q hello "$tmp/out" || streamed=yes
	[ "$streamed" = yes ] || echo "# no output after $((i / 10)) s; stderr so far:" \
		"$(cat "$tmp/err")"
	kill "-$1" "$rp"
	i=0
	while kill -0 "$rp" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if kill -0 "$rp" 2>/dev/null; then
		not_ok "$1 while QEMU runs ends run-in-guest within 10 s"
		kill -TERM "$(cat "$tmp/pid")" 2>/dev/null || :
		wait "$rp" || :
		return
	fi
	st=0
	wait "$rp" || st=$?
	check "$1 while QEMU runs: status $st (want $2), QEMU stopped, output streamed: $streamed" \
		sh -c '[ "$1" = "$2" ] && [ "$3" = yes ] && [ -s "$4/term" ] &&
			! grep -q "no result" "$4/err" || { cat "$4/err"; exit 1; }' \
		sh "$st" "$2" "$streamed" "$tmp"
}
sig_case TERM 143
sig_case INT 130
sig_case HUP 129
tap_done
