#!/bin/sh
# SPDX-License-Identifier: MIT
# check-symbols.sh must see what the header really declares and parse the map
# layout that lib/libcvmdma.map prescribes.  Runs it on mutated copies of the
# header and the map against the built library.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
plan 3
if [ ! -f "$top_builddir/lib/.libs/libcvmdma.so" ]; then
	for t in "a function named only in a comment is not a declaration" \
		 "a map with a LIBCVMDMA_0.2 node inheriting LIBCVMDMA_0.1 parses" \
		 "a node newer than the header's version fails"; do
		skip "$t" "no shared library (--disable-shared): check-symbols.sh checks less"
	done
	tap_done
fi

copy() { # dir: a source tree with the header, the map and the checks
	mkdir -p "$1/include" "$1/lib" "$1/tests"
	cp "$top_srcdir/include/cvmdma.h" "$1/include/"
	cp "$top_srcdir/lib/libcvmdma.map" "$1/lib/"
	cp "$top_srcdir/tests/tap.sh" "$top_srcdir/tests/check-symbols.sh" "$1/tests/"
	chmod -R u+w "$1"   # make distcheck's source tree is read-only
}
symcheck() { top_srcdir=$1 sh "$1/tests/check-symbols.sh" >"$1/log" 2>&1; }

# A function the .so exports and the map lists, but whose declaration is gone
# (a comment still names it with parentheses): the check must fail.
copy "$tmp/a"
sed -i '/^int cvm_dma_repair(struct cvm_dma \*dma);$/d' "$tmp/a/include/cvmdma.h"
if grep -q '^int cvm_dma_repair(' "$tmp/a/include/cvmdma.h"; then
	not_ok "a function named only in a comment is not a declaration (could not mutate the header)"
elif symcheck "$tmp/a"; then
	not_ok "a function named only in a comment is not a declaration"
	sed 's/^/# /' "$tmp/a/log"
else
	ok "a function named only in a comment is not a declaration"
fi

# A second node that inherits the first, as the map's comment says new
# releases add (the header says 0.2): the same symbols split over two nodes
# must pass.
node02() { # dir: move cvm_version to a new LIBCVMDMA_0.2 node
	sed -i '/^\tcvm_version;$/d' "$1/lib/libcvmdma.map"
	printf '\nLIBCVMDMA_0.2 {\nglobal:\n\tcvm_version;\n} LIBCVMDMA_0.1;\n' >>"$1/lib/libcvmdma.map"
}
copy "$tmp/b"
node02 "$tmp/b"
sed -i 's/^#define CVMDMA_VERSION_MINOR .*/#define CVMDMA_VERSION_MINOR 2/' "$tmp/b/include/cvmdma.h"
if symcheck "$tmp/b"; then
	ok "a map with a LIBCVMDMA_0.2 node inheriting LIBCVMDMA_0.1 parses"
else
	not_ok "a map with a LIBCVMDMA_0.2 node inheriting LIBCVMDMA_0.1 parses"
	sed 's/^/# /' "$tmp/b/log"
fi
# The same map while the header still says 0.1: symbols in a node named
# after a release that is not this one must fail.
copy "$tmp/c"
node02 "$tmp/c"
if ! grep -q '^LIBCVMDMA_0.2 {' "$tmp/c/lib/libcvmdma.map"; then
	not_ok "a node newer than the header's version fails (could not mutate the map)"
elif symcheck "$tmp/c"; then
	not_ok "a node newer than the header's version fails"
	sed 's/^/# /' "$tmp/c/log"
else
	ok "a node newer than the header's version fails"
fi
tap_done
