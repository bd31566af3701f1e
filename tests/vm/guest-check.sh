#!/bin/sh
# SPDX-License-Identifier: MIT
# make check's guest stage: boot one guest kernel ONCE, run every guest test
# program in it, and report each TAP line of each program as one TAP line of
# our own ("PROGRAM: description"), so every guest test is its own
# PASS/FAIL/SKIP in make check.
#
#   tests/vm/guest-check.sh --kernel A|B [--timeout S] [--trace] [PROGRAM...]
#
# --trace records the virtual IOMMU's IOTLB invalidations (qemu-run --trace)
# and checks the programs' claims about them (guest-tap.awk): a boot of its
# own for the programs that make such claims (tests/vm/guest-iotlb.c), as a
# whole run's record would be hundreds of megabytes.
#
# Test 1 checks the harness itself: the kernel boots and edu is bound to
# vfio-pci.  A program that crashes, hangs (killed after $CVMDMA_VM_TEST_TIMEOUT
# s, default 300), breaks its plan or exits non-zero without a failed test
# adds a "not ok".  Without QEMU, busybox-static, cpio, the guest kernel's
# source or its build tools, every test is a SKIP that says why; a guest
# kernel that fails to build fails every test.  The first run on a machine
# builds the kernel (tests/vm/build-kernel, ~8 min).
set -u

here=$(cd "$(dirname "$0")" && pwd)
kernel=A limit= tracing=
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=${2:-}; shift 2 ;;
	--timeout) limit=${2:-}; shift 2 ;;
	--trace) tracing=1; shift ;;
	*) break ;;
	esac
done
per_prog=${CVMDMA_VM_TEST_TIMEOUT:-300}
# A guest that prints nothing for this long has stalled (every program
# prints as it goes; the slowest step, 65,535 maps, takes ~20 s).  Longer
# than a program's own limit: a program that hangs silently is killed by
# the guest first, which fails it (exit status 137) and goes on with the
# next program; only a guest that stalls as a whole (its timers too) is
# stopped here, and booted once more (below).
stall=${CVMDMA_VM_STALL_TIMEOUT:-$((per_prog + 60))}
# Boot takes seconds; allow every program its full share on top.
limit=${limit:-$((120 + per_prog * $#))}

names=
for p in "$@"; do
	names="$names $(basename "$p")"
done

# Every test SKIPs with reason $1 (tooling unavailable: not a failure).
skip_all() {
	n=1
	echo "ok $n - harness: kernel $kernel boots with edu bound to vfio-pci # SKIP $1"
	for name in $names; do
		n=$((n + 1))
		echo "ok $n - $name # SKIP $1"
	done
	echo "1..$n"
	exit 0
}

# Every test FAILs with reason $1 (the harness is there but broke).
fail_all() {
	n=1
	echo "not ok $n - harness: kernel $kernel boots with edu bound to vfio-pci ($1)"
	for name in $names; do
		n=$((n + 1))
		echo "not ok $n - $name (not run: $1)"
	done
	echo "1..$n"
	exit 1
}

# Last line of a tool's complaint, for a SKIP reason (TAP wants one line, no '#').
reason() { tail -n 1 "$1" | tr -d '#' | sed 's/^[a-z-]*: //'; }

case $kernel in A | B) ;; *) echo "Bail out! --kernel must be A or B" ; exit 2 ;; esac
dups=$(printf '%s\n' $names | sort | uniq -d)
[ -z "$dups" ] || fail_all "two programs named $dups"

work=$(mktemp -d "${TMPDIR:-/tmp}/cvm-check.XXXXXX") || fail_all "mktemp failed"
# QEMU runs in a session of its own (see boot), out of reach of the signals
# that stop us (make's ^C, a CI job's TERM): stop it on the way out.  A
# trapped INT/TERM must end the script, not return into it.
qpid=
cleanup() {
	[ -z "$qpid" ] || stop_session KILL
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
t0=$(date +%s)

# Only 77 means "no QEMU here"; any other failure is a broken harness.
st=0
"$here/qemu-run" --check 2>"$work/err" || st=$?
case $st in
0) ;;
77) skip_all "$(reason "$work/err")" ;;
*) sed 's/^/# /' "$work/err"; fail_all "qemu-run --check exited $st: $(reason "$work/err")" ;;
esac
for p in "$@"; do
	echo "$(basename "$p") /bin/$(basename "$p")"
done >"$work/run"
"$here/mkinitramfs" -r "$work/run" "$work/initrd.gz" "$@" 2>"$work/err"
case $? in
0) ;;
77) skip_all "$(reason "$work/err")" ;;
*) sed 's/^/# /' "$work/err"; fail_all "initramfs: $(reason "$work/err")" ;;
esac
echo "# guest kernel $kernel: tests/vm/build-kernel (first run on a machine builds it, ~8 min)"
st=0
bz=$("$here/build-kernel" "$kernel" 2>"$work/err") || st=$?
if [ "$st" -ne 0 ]; then
	sed 's/^/# build-kernel: /' "$work/err"
	[ "$st" -eq 77 ] && skip_all "guest kernel $kernel unavailable: $(reason "$work/err")"
	fail_all "guest kernel $kernel failed to build: $(reason "$work/err")"
fi
t1=$(date +%s)
echo "# kernel ready after $((t1 - t0)) s; booting $bz"

# Boot, and stop the guest (as if qemu-run's timeout had: exit 124) once its
# console has been quiet for $stall s: a stalled TCG guest would otherwise
# sit until the whole-run timeout, $limit s.  qemu-run gets its own process
# session (setsid), so that stopping the session stops QEMU too (timeout(1)
# puts QEMU in a process group of its own, but not in a session).
stop_session() {
	pkill "-$1" -s "$qpid" 2>/dev/null || kill "-$1" "$qpid" 2>/dev/null
}

boot() {
	: >"$work/serial"
	launch=
	! command -v setsid >/dev/null 2>&1 || launch=setsid
	trace_arg=
	if [ -n "$tracing" ]; then
		: >"$work/iotlb.trace"
		trace_arg=$work/iotlb.trace
	fi
	$launch "$here/qemu-run" --timeout "$limit" --append "CVM_TIMEOUT=$per_prog$gcov_arg" \
		${trace_arg:+--trace "$trace_arg"} "$bz" "$work/initrd.gz" >"$work/serial" \
		2>"$work/qemu.err" &
	qpid=$!
	last=-1 quiet=0
	while kill -0 "$qpid" 2>/dev/null && [ "$quiet" -lt "$stall" ]; do
		sleep 2
		size=$(wc -c <"$work/serial")
		if [ "$size" -ne "$last" ]; then
			last=$size quiet=0
		else
			quiet=$((quiet + 2))
		fi
	done
	if [ "$quiet" -ge "$stall" ]; then
		stop_session TERM
		sleep 5
		stop_session KILL
		wait "$qpid" 2>/dev/null
		echo "guest-check: the guest printed nothing for $stall s: stopped" >>"$work/qemu.err"
		rc=124
	else
		wait "$qpid"
		rc=$?
	fi
	qpid=
	{
		cat "$work/serial"
		[ "$rc" -eq 0 ] || echo "@@CVM-QEMU-EXIT $rc"
	} | awk -v kernel="$kernel" -v names="$names" -v trace="$trace_arg" \
		-f "$here/guest-tap.awk" >"$work/tap"
	status=$?
}

# A coverage build (configure --enable-coverage): the programs' counts come
# out of the guest (tests/vm/init) into coverage-guest/$kernel.tar (a --trace
# boot's into $kernel-trace.tar) of the build directory, for make coverage.
gcov_arg=
[ -z "${COVERAGE:-}" ] || gcov_arg=" GCOV_PREFIX=/gcov"
keep_gcov() {
	[ -n "$gcov_arg" ] || return 0
	dir=${top_builddir:-.}/coverage-guest run=$kernel${tracing:+-trace}
	mkdir -p "$dir" || return 0
	if sed -n '/^@@CVM-GCOV-BEGIN/,/^@@CVM-GCOV-END/p' "$work/serial" | tr -d '\r' |
		sed '1d;$d' | base64 -d | gzip -dc >"$dir/$run.tar.new" 2>"$work/gcov.err" &&
		tar -tf "$dir/$run.tar.new" >/dev/null 2>&1; then
		mv -f "$dir/$run.tar.new" "$dir/$run.tar"
		echo "# coverage counts of kernel $kernel's run kept in $dir/$run.tar"
	else
		# Not an older run's counts either, added to newer host ones.
		rm -f "$dir/$run.tar.new" "$dir/$run.tar"
		echo "# no coverage counts came out of the guest: $(tail -n 1 "$work/gcov.err")"
	fi
}

boot
# A TCG guest on a heavily loaded host has been seen to stall until the
# timeout (once in many runs, never reproduced on a quiet host; once mid-run
# with the guest idle, so that even its own per-program timer never fired).
# Boot once more, and say so: a real hang hangs twice and fails.  A program
# that hangs while the guest lives never gets here: the guest kills it
# after $per_prog s, before the console has been quiet for $stall s.
if grep -q '(qemu-run exit 124)' "$work/tap" && [ -z "${CVMDMA_VM_NO_RETRY:-}" ]; then
	echo "# the guest hung until the timeout; the first attempt said:"
	sed 's/^/#   /' "$work/tap" "$work/qemu.err"
	echo "# booting kernel $kernel once more"
	boot
fi
cat "$work/tap"
keep_gcov
sed 's/^/# qemu: /' "$work/qemu.err"
[ -z "$tracing" ] || echo "# vIOMMU trace: $(wc -l <"$work/iotlb.trace") IOTLB invalidations recorded"
echo "# guest stage took $(($(date +%s) - t1)) s (boot + tests + poweroff)"
exit "$status"
