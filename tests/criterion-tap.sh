#!/bin/sh
# SPDX-License-Identifier: MIT
# make check's LOG_COMPILER, for every test (TEST_EXTENSIONS is automake's
# .test, so the .sh checks come here too): runs PROGRAM [ARGS...] with
# Criterion's TAP going to a file, then prints the file on standard output
# for the TAP driver.  With CRITERION_OUTPUTS=tap:-
# (standard output) Criterion sends its tests' standard output and error
# to /dev/null, and with them what ASan or UBSan says about a failing
# test; this way it stays in the test's log.  A program that is not
# Criterion prints its own TAP, and the file stays empty.
tap=$(mktemp "${TMPDIR:-/tmp}/cvm-tap.XXXXXX") || exit 99
trap 'rm -f "$tap"' EXIT
trap 'rm -f "$tap"; exit 129' HUP
trap 'rm -f "$tap"; exit 130' INT
trap 'rm -f "$tap"; exit 143' TERM
CRITERION_OUTPUTS=tap:$tap
export CRITERION_OUTPUTS
st=0
"$@" || st=$?
cat "$tap"
exit "$st"
