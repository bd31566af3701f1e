#!/bin/sh
# SPDX-License-Identifier: MIT
# The installed header compiles on its own, as strict C and as C++, and so
# does the installed example.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
plan 7
printf '#include <cvmdma.h>\nint main(void) { return cvm_version() == 0; }\n' >"$tmp/t.c"
cat >"$tmp/t.cc" <<'EOF2'
#include <cvmdma.h>
/* The C idiom of a function named like its struct, used from C++. */
int stats(struct cvm_dma *d)
{
	struct cvm_dma_stats st = {};
	st.sz = sizeof(st);
	return cvm_dma_stats(d, &st);
}
int main(void) { return cvm_version() == 0; }
EOF2
check "header compiles alone as C11 -Wall -Werror -pedantic" \
	${CC:-cc} -std=c11 -Wall -Wextra -Werror -pedantic -I"$top_srcdir/include" -c "$tmp/t.c" -o "$tmp/t.o"
check "header compiles alone as C89 -pedantic -Wstrict-prototypes" \
	${CC:-cc} -std=c89 -pedantic -Wall -Werror -Wstrict-prototypes -I"$top_srcdir/include" -c "$tmp/t.c" -o "$tmp/t2.o"
check "header compiles alone as C++ -Wall -Wextra -Wshadow -Werror, structs named with struct" \
	${CXX:-c++} -std=c++11 -Wall -Wextra -Wshadow -Werror -I"$top_srcdir/include" \
	-c "$tmp/t.cc" -o "$tmp/t3.o"
check "header compiles as C -Wpadded -Werror: no hidden padding in a struct" \
	${CC:-cc} -std=c11 -Wpadded -Werror -I"$top_srcdir/include" -c "$tmp/t.c" -o "$tmp/t4.o"
check "the 0.1 enumerators, flag values and field layout are unchanged (tests/abi-constants.c)" \
	${CC:-cc} -std=c11 -Wall -Werror -I"$top_srcdir/include" -c "$top_srcdir/tests/abi-constants.c" \
	-o "$tmp/t5.o"
# CVMDMA_VERSION_MAJOR.MINOR is the version configure builds (AC_INIT).
hv=$(sed -n 's/^#define CVMDMA_VERSION_MAJOR \([0-9]*\)$/\1/p' "$top_srcdir/include/cvmdma.h").$(
	sed -n 's/^#define CVMDMA_VERSION_MINOR \([0-9]*\)$/\1/p' "$top_srcdir/include/cvmdma.h")
check "header version $hv is the package's $PACKAGE_VERSION (major.minor)" \
	test "$hv" = "$(echo "$PACKAGE_VERSION" | cut -d. -f1-2)"
check "examples/minimal-vmm.c compiles as C99 with -Wall -Wextra -Werror" \
	${CC:-cc} -std=c99 -Wall -Wextra -Werror -I"$top_srcdir/include" \
	-c "$top_srcdir/examples/minimal-vmm.c" -o "$tmp/t6.o"
tap_done
