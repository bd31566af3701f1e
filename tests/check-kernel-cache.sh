#!/bin/sh
# SPDX-License-Identifier: MIT
# The guest-kernel cache of tests/vm/build-kernel, on a scratch cache with
# stand-in images (no kernel is built): the key follows the compiler and the
# config fragments; once both images exist the source and object trees go;
# entries of other keys go after CVMDMA_CACHE_DAYS days unused, and nothing
# else in the cache is touched.
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bk=$top_srcdir/tests/vm/build-kernel
CVMDMA_CACHE_DIR=$tmp/cache
export CVMDMA_CACHE_DIR
unset CVMDMA_KEEP_KERNEL_TREE CVMDMA_CACHE_DAYS

st=0
key=$("$bk" key 2>"$tmp/why") || st=$?
if [ $st -eq 77 ]; then
	echo "1..0 # SKIP $(tail -n 1 "$tmp/why")"
	exit 0
fi
plan 13
check "build-kernel key exits 0 and prints 16 hex digits" \
	sh -c '[ "$1" -eq 0 ] && printf "%s\n" "$2" | grep -qx "[0-9a-f]\{16\}"' sh "$st" "$key"

# A copy of the script and fragments, and a gcc that says another version.
mkdir -p "$tmp/vm" "$tmp/bin"
cp "$bk" "$top_srcdir"/tests/vm/kernel-A.config "$top_srcdir"/tests/vm/kernel-B.config "$tmp/vm/"
chmod u+w "$tmp"/vm/*   # make distcheck's source tree is read-only
printf '#!/bin/sh\n[ "$1" = -dumpfullversion ] && echo 99.0.0 && exit 0\nexec %s "$@"\n' \
	"$(command -v gcc)" >"$tmp/bin/gcc"
chmod +x "$tmp/bin/gcc"
check "the key changes with the compiler's version" \
	sh -c '[ "$(PATH=$1:$PATH "$2" key)" != "$3" ]' sh "$tmp/bin" "$tmp/vm/build-kernel" "$key"
echo "CONFIG_OTHER=y" >>"$tmp/vm/kernel-B.config"
check "the key changes with a config fragment" \
	sh -c '[ "$("$1" key)" != "$2" ]' sh "$tmp/vm/build-kernel" "$key"

# A cache with both images of this key built, trees still there, and
# other entries: one stale, one recent, and something that is not ours.
cur=$CVMDMA_CACHE_DIR/kernel-$key
mkcache() {
	rm -rf "$CVMDMA_CACHE_DIR"
	mkdir -p "$cur/src" "$cur/obj-A" "$cur/obj-B" "$CVMDMA_CACHE_DIR/kernel-old/src" \
		"$CVMDMA_CACHE_DIR/kernel-recent" "$CVMDMA_CACHE_DIR/notes"
	echo A >"$cur/bzImage-A"
	echo B >"$cur/bzImage-B"
	# Built long ago by an older copy of the script, which never touches
	# the directory, but its image read by QEMU yesterday.
	mkdir -p "$CVMDMA_CACHE_DIR/kernel-oldread"
	echo A >"$CVMDMA_CACHE_DIR/kernel-oldread/bzImage-A"
	echo A >"$CVMDMA_CACHE_DIR/kernel-old/bzImage-A"
	touch -d '40 days ago' "$CVMDMA_CACHE_DIR/kernel-old/bzImage-A" \
		"$CVMDMA_CACHE_DIR/kernel-oldread/bzImage-A"
	touch -a -d '1 day ago' "$CVMDMA_CACHE_DIR/kernel-oldread/bzImage-A"
	touch -d '40 days ago' "$CVMDMA_CACHE_DIR/kernel-old" "$CVMDMA_CACHE_DIR/notes" "$cur" \
		"$CVMDMA_CACHE_DIR/kernel-oldread"
	touch -d '5 days ago' "$CVMDMA_CACHE_DIR/kernel-recent"
	mkdir -p "$CVMDMA_CACHE_DIR/kernel-36h"
	touch -d '36 hours ago' "$CVMDMA_CACHE_DIR/kernel-36h"
}
# Should a bug make it build after all, fail at once instead of for minutes.
mkdir -p "$tmp/nobuild"
for t in tar make; do
	printf '#!/bin/sh\necho "%s: a build was attempted" >&2\nexit 1\n' $t >"$tmp/nobuild/$t"
	chmod +x "$tmp/nobuild/$t"
done
nb() { PATH=$tmp/nobuild:$PATH "$bk" "$@"; }
mkcache
nb all >"$tmp/out" 2>"$tmp/err"
check "build-kernel all exits 0 and prints both cached images" \
	test $? -eq 0 -a "$(cat "$tmp/out")" = "$(printf '%s\n' "$cur/bzImage-A" "$cur/bzImage-B")"
check "both images built: the source and object trees are gone, the images stay" \
	sh -c '[ ! -e "$1/src" ] && [ ! -e "$1/obj-A" ] && [ ! -e "$1/obj-B" ] &&
		[ "$(cat "$1/bzImage-A" "$1/bzImage-B")" = "$(printf "A\nB")" ]' sh "$cur"
check "an entry of another key unused for 40 days is gone; one used 5 days ago stays" \
	sh -c '[ ! -e "$1/kernel-old" ] && [ -d "$1/kernel-recent" ]' sh "$CVMDMA_CACHE_DIR"
check "the entry in use is kept however old its mtime was, and touched" \
	sh -c '[ -d "$1" ] && [ -n "$(find "$1" -maxdepth 0 -mtime -1)" ]' sh "$cur"
check "what is not a kernel entry is left alone" test -d "$CVMDMA_CACHE_DIR/notes"
check "an old entry whose image was read within the days stays (older scripts never touch it)" \
	test -d "$CVMDMA_CACHE_DIR/kernel-oldread"

# A removal that fails (a cache shared with another user) is no failure.
mkcache
mkdir -p "$tmp/badrm"
printf '#!/bin/sh\necho "rm: cannot remove: Permission denied" >&2\nexit 1\n' >"$tmp/badrm/rm"
chmod +x "$tmp/badrm/rm"
PATH=$tmp/badrm:$tmp/nobuild:$PATH "$bk" A >"$tmp/out" 2>"$tmp/err"
check "a clean-up that cannot remove something still prints the image and exits 0" \
	test $? -eq 0 -a "$(cat "$tmp/out")" = "$cur/bzImage-A"

mkcache
CVMDMA_KEEP_KERNEL_TREE=1 nb A >/dev/null 2>&1
check "CVMDMA_KEEP_KERNEL_TREE=1 keeps the trees" \
	test -d "$cur/src" -a -d "$cur/obj-A" -a -d "$cur/obj-B"

CVMDMA_CACHE_DAYS=1 nb prune >/dev/null 2>&1
check "prune with CVMDMA_CACHE_DAYS=1 removes the entries unused for 5 days and for 36 hours, not the current one" \
	sh -c '[ ! -e "$1/kernel-recent" ] && [ ! -e "$1/kernel-36h" ] && [ -d "$2/src" ]' \
	sh "$CVMDMA_CACHE_DIR" "$cur"

st=0
CVMDMA_CACHE_DAYS=x nb prune >/dev/null 2>&1 || st=$?
check "a CVMDMA_CACHE_DAYS that is not a number is a usage error (2)" test $st -eq 2
tap_done
