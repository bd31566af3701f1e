#!/bin/sh
# SPDX-License-Identifier: MIT
# The installed header compiles on its own, as strict C and as C++.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
plan 3
printf '#include <cvmdma.h>\nint main(void) { return cvm_version() == 0; }\n' >"$tmp/t.c"
cp "$tmp/t.c" "$tmp/t.cc"
check "header compiles alone as C11 -Wall -Werror -pedantic" \
	${CC:-cc} -std=c11 -Wall -Wextra -Werror -pedantic -I"$top_srcdir/include" -c "$tmp/t.c" -o "$tmp/t.o"
check "header compiles alone as C89-compatible gnu89 declarations" \
	${CC:-cc} -std=gnu99 -Wall -Werror -Wstrict-prototypes -I"$top_srcdir/include" -c "$tmp/t.c" -o "$tmp/t2.o"
check "header compiles alone as C++ -Wall -Werror" \
	${CXX:-c++} -std=c++11 -Wall -Wextra -Werror -I"$top_srcdir/include" -c "$tmp/t.cc" -o "$tmp/t3.o"
tap_done
