#!/bin/sh
# SPDX-License-Identifier: MIT
# Every public function has a man page that man(1) finds; every page lints
# clean under mandoc and groff, has the sections a library page needs, shows
# the prototypes, structs and constants exactly as the header declares them,
# links only to pages that exist, and its example code compiles (and, once
# the library exports what it uses, runs).
. "$top_srcdir/tests/tap.sh"
hdr=$top_srcdir/include/cvmdma.h
mandir=$(cd "$top_srcdir/doc/man" 2>/dev/null && pwd) || mandir=$top_srcdir/doc/man
so=$top_builddir/lib/.libs/libcvmdma.so
MANDOC=${MANDOC-$(command -v mandoc)}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
bs=$(printf '\b')
# The plan goes last (TAP allows it): the number of tests follows the pages.

# Declarations in C text on stdin, one per line, normalised (comments gone,
# one space between tokens):  F<TAB>name<TAB>prototype, S<TAB>struct x<TAB>
# definition, D<TAB>NAME<TAB>value.  Used on the header and on the rendered
# SYNOPSIS of each page, so both sides are parsed the same way.
decls() {
	awk '
	function norm(s) {
		gsub(/[(),*;{}=]/, " & ", s)
		gsub(/[ \t]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s)
		return s
	}
	/^[ \t]*#[ \t]*define[ \t]+CVM/ {
		line = $0; sub(/\/\*.*/, "", line)
		name = line; sub(/^[ \t]*#[ \t]*define[ \t]+/, "", name); sub(/[ \t(].*/, "", name)
		sub(/^[ \t]*#[ \t]*define[ \t]+[A-Za-z0-9_]+/, "", line)
		print "D\t" name "\t" norm(line)
		next
	}
	/^[ \t]*#/ { next }
	{ text = text " " $0 }
	END {
		while ((i = index(text, "/*")) > 0) {
			rest = substr(text, i + 2)
			j = index(rest, "*/")
			if (j == 0) { text = substr(text, 1, i - 1); break }
			text = substr(text, 1, i - 1) " " substr(rest, j + 2)
		}
		t = text
		while (match(t, /(struct|enum)[ \t]+cvm_[a-z0-9_]+[ \t]*\{[^}]*\}/)) {
			s = substr(t, RSTART, RLENGTH)
			tag = s; sub(/[ \t]*\{.*/, "", tag); gsub(/[ \t]+/, " ", tag)
			print "S\t" tag "\t" norm(s)
			t = substr(t, RSTART + RLENGTH)
		}
		n = split(text, rec, /[;{}]/)
		for (k = 1; k <= n; k++) {
			if (!match(rec[k], /cvm_[a-z0-9_]+[ \t]*\(/))
				continue
			name = substr(rec[k], RSTART, RLENGTH); sub(/[ \t]*\($/, "", name)
			print "F\t" name "\t" norm(rec[k])
		}
	}'
}

# Member names of a normalised struct definition (S line, field 3).
members() {
	printf '%s\n' "$1" | awk '{
		sub(/^[^{]*\{ /, ""); sub(/ \}$/, "")
		n = split($0, m, / ; ?/)
		for (k = 1; k <= n; k++) {
			if (m[k] == "") continue
			if (match(m[k], /\( \* [a-z0-9_]+ \)/)) {
				f = substr(m[k], RSTART + 4, RLENGTH - 6); print f; continue
			}
			c = split(m[k], p, / , /)
			for (i = 1; i <= c; i++) { w = split(p[i], x, / /); print x[w] }
		}
	}'
}

# A page as plain text, or nothing when no formatter is installed.
render() {
	if [ -n "$MANDOC" ]; then
		"$MANDOC" -Tascii -Owidth=80 "$1"
	elif command -v groff >/dev/null 2>&1; then
		groff -man -Tascii -rLL=80n -rHY=0 -P-cbou "$1"
	else
		return 1
	fi | sed "s/.$bs//g"
}
synopsis() { awk '/^SYNOPSIS$/ { s = 1; next } s && /^[^ \t]/ { s = 0 } s' "$1"; }
outside_synopsis() { awk '/^SYNOPSIS$/ { s = 1; next } s && /^[^ \t]/ { s = 0 } !s' "$1"; }
# Section titles of a page source, in order.
sections() { sed -n 's/^\.SH[[:space:]]*//p' "$1" | tr -d '"' | sed 's/[[:space:]]*$//'; }

# ---- the header ----
sed -e 's@/\*.*\*/@@g' "$hdr" | tr '\n' ' ' | tr ';' '\n' |
	grep -oE '\bcvm_[a-z0-9_]+[[:space:]]*\(' | grep -v '(\*' |
	sed 's/[[:space:]]*(//' | sort -u >"$tmp/functions"
decls <"$hdr" >"$tmp/header.decls"
if [ ! -s "$tmp/functions" ] || ! grep -q '^F' "$tmp/header.decls"; then
	not_ok "the header declares functions (parsing $hdr)"
	plan "$tap_n"; tap_done
fi

# ---- every function has a page, and man(1) finds it ----
mkdir -p "$tmp/man/man1" "$tmp/man/man3" "$tmp/man/man7"
for f in "$mandir"/*.[137]; do
	[ -e "$f" ] || continue
	ln -s "$f" "$tmp/man/man${f##*.}/${f##*/}"
done
have_man=no
command -v man >/dev/null 2>&1 && have_man=yes
while read -r fn; do
	if [ ! -f "$mandir/$fn.3" ]; then
		not_ok "$fn has a man page (doc/man/$fn.3 is missing)"
	elif [ $have_man = yes ]; then
		check "$fn has a man page that man(1) finds" \
			env MANPATH= man -M "$tmp/man" -w 3 "$fn"
	else
		ok "$fn has a man page (man(1) not installed: not asked)"
	fi
done <"$tmp/functions"

# ---- every page is installed, every constant documented ----
missing=
for f in "$mandir"/*.[137]; do
	[ -e "$f" ] || continue
	grep -qs "doc/man/${f##*/}\b" "$top_srcdir"/mk/*.mk "$top_srcdir/Makefile.am" ||
		missing="$missing ${f##*/}"
done
check "every page in doc/man is installed (dist_man_MANS)${missing:+: missing$missing}" \
	test -z "$missing"
undocumented=
for c in $(sed 's@/\*.*\*/@@g' "$hdr" | grep -oE '\bCVM(DMA)?_[A-Z0-9_]+\b' | sort -u); do
	[ "$c" = CVMDMA_H ] && continue
	cat "$mandir"/*.[37] | grep -qw -- "$c" || undocumented="$undocumented $c"
done
check "every constant in the header is documented${undocumented:+: not$undocumented}" \
	test -z "$undocumented"

# ---- each page ----
if [ -n "$MANDOC" ]; then :; else mandoc_why="mandoc not installed (configure found no MANDOC)"; fi
have_groff=no
[ $have_man = yes ] && command -v groff >/dev/null 2>&1 && have_groff=yes
locale=C.UTF-8
locale -a 2>/dev/null | grep -qix 'c.utf-\?8' || locale=C

for f in "$mandir"/*.[137]; do
	[ -e "$f" ] || continue
	page=${f##*/}; name=${page%.*}; sec=${page##*.}

	if [ -n "$MANDOC" ]; then
		check "$page: mandoc -Tlint -W warning is clean" \
			sh -c 'out=$("$1" -Tlint -W warning "$2" 2>&1); rc=$?; printf "%s" "$out"; \
				test $rc -eq 0 && test -z "$out"' sh "$MANDOC" "$f"
		# Style too, except lower-case titles: man-pages(7) and liburing
		# title a function's page with the function's own name.
		check "$page: mandoc -Tlint -W style is clean (but for lower-case titles)" \
			sh -c 'out=$("$1" -Tlint -W style "$2" 2>&1 |
				grep -v "lower case character in document title"); \
				printf "%s" "$out"; test -z "$out"' sh "$MANDOC" "$f"
	else
		skip "$page: mandoc -Tlint -W warning is clean" "$mandoc_why"
		skip "$page: mandoc -Tlint -W style is clean (but for lower-case titles)" "$mandoc_why"
	fi
	# man-pages(7): paragraphs are .PP, not blank lines; no trailing blanks.
	bad=$(awk '/^\.(nf|EX)/ { nf = 1 } /^\.(fi|EE)/ { nf = 0 }
		/[ \t]$/ || (!nf && /^$/) { print FNR }' "$f" | tr '\n' ' ')
	check "$page: no blank lines outside examples, no trailing blanks${bad:+ (lines $bad)}" \
		test -z "$bad"
	if [ $have_groff = yes ]; then
		check "$page: man --warnings (groff) is clean at 80 columns" \
			sh -c 'out=$(LC_ALL=$1 MANROFFSEQ= MANWIDTH=80 man --warnings -E UTF-8 \
				-l -Tutf8 -Z "$2" 2>&1 >/dev/null); printf "%s" "$out"; test -z "$out"' \
			sh "$locale" "$f"
	else
		skip "$page: man --warnings (groff) is clean at 80 columns" "man or groff not installed"
	fi

	# NAME: "name[, name...] \- summary", which whatis/apropos index.
	namel=$(awk '/^\.SH/ { s = ($0 ~ /NAME/); next } s' "$f" | tr '\n' ' ')
	if command -v lexgrog >/dev/null 2>&1; then
		check "$page: NAME section names $name for whatis (lexgrog)" \
			sh -c 'lexgrog "$1" | grep -qE "\"([^\"]*[ ,])?$2(,[^\"]*)? - "' sh "$f" "$name"
	else
		check "$page: NAME section names $name" \
			sh -c 'printf "%s" "$1" | grep -qE "(^|[ ,])$2(,.*)? \\\\- "' sh "$namel" "$name"
	fi

	case $sec in
	3) need="NAME LIBRARY SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS THREAD_SAFETY" ;;
	1) need="NAME SYNOPSIS DESCRIPTION" ;;
	*) need="NAME DESCRIPTION" ;;
	esac
	have=$(sections "$f" | tr ' ' _ | grep -xF "$(printf '%s\n' $need)" | tr '\n' ' ')
	check "$page: has the sections $need, in that order" \
		sh -c 'test "$1" = "$2 " || { echo "has: $1"; false; }' sh "$have" "$need"

	bad=
	for x in $(sed 's/\\f[BIRP]//g' "$f" |
			grep -oE '(cvm_[a-z0-9_]+|libcvmdma|cvmdma-[a-z0-9-]+)"? ?\([0-9]\)' |
			sed 's/["() ]//g; s/\([0-9]\)$/.\1/' | sort -u); do
		[ -f "$mandir/$x" ] || bad="$bad $x"
	done
	check "$page: every cross-reference has a page${bad:+ (missing:$bad)}" test -z "$bad"

	rendered=no
	render "$f" >"$tmp/$page.txt" 2>/dev/null && [ -s "$tmp/$page.txt" ] && rendered=yes
	if [ $rendered = yes ]; then
		long=$(awk 'length > 80 { print FNR ": " $0 }' "$tmp/$page.txt")
		check "$page: renders within 80 columns" \
			sh -c 'test -z "$1" || { printf "%s\n" "$1"; false; }' sh "$long"
	else
		skip "$page: renders within 80 columns" "neither mandoc nor groff installed"
	fi

	# SYNOPSIS against the header.
	if [ "$sec" = 3 ] && grep -qx "$name" "$tmp/functions"; then
		if [ $rendered = no ]; then
			skip "$page: SYNOPSIS declares $name as the header does" \
				"neither mandoc nor groff installed"
		else
			synopsis "$tmp/$page.txt" | decls >"$tmp/$page.decls"
			want=$(awk -F '\t' -v n="$name" '$1 == "F" && $2 == n' "$tmp/header.decls")
			check "$page: SYNOPSIS declares $name as the header does" \
				sh -c 'grep -qxF "$1" "$2" || { printf "header: %s\npage:   %s\n" \
					"$1" "$(grep "$3" "$2")"; false; }' \
				sh "$want" "$tmp/$page.decls" "$name"
			wrong=$(grep -vxF -f "$tmp/header.decls" "$tmp/$page.decls" | cut -f2 | tr '\n' ' ')
			check "$page: every declaration, struct and #define in SYNOPSIS is the header's${wrong:+ (differs: $wrong)}" \
				test -z "$wrong"
			undescribed=
			outside_synopsis "$tmp/$page.txt" >"$tmp/$page.rest"
			for s in $(awk -F '\t' '$1 == "S" && $2 ~ /^struct / { print $3 }' "$tmp/$page.decls" | tr ' ' '~'); do
				for m in $(members "$(printf '%s' "$s" | tr '~' ' ')"); do
					grep -qw -- "$m" "$tmp/$page.rest" || undescribed="$undescribed $m"
				done
			done
			check "$page: every field of the structs in SYNOPSIS is described${undescribed:+ (not:$undescribed)}" \
				test -z "$undescribed"
		fi
	fi

	# EXAMPLES: every block that includes a header is C that must compile;
	# a block after a line ending in "prints:" is that program's output.
	awk -v out="$tmp/$page.ex" '
		/^\.SH/ { ex = ($0 ~ /EXAMPLES?/); next }
		ex && /^\.EX/ {
			if (last ~ /prints:$/) file = out n ".expected"
			else file = out (++n) ".c"
			inx = 1; next
		}
		ex && /^\.EE/ { inx = 0; next }
		inx { print > file; next }
		ex && !/^\./ { last = $0 }' "$f"
	for c in "$tmp/$page".ex*; do
		[ -e "$c" ] && sed -i -e 's/\\e/\\/g; s/\\-/-/g; s/\\(aq/'"'"'/g; s/\\(dq/"/g' \
			-e 's/\\&//g; s/\\(ti/~/g; s/\\(ha/^/g; s/\\(rs/\\/g' "$c"
	done
	for c in "$tmp/$page".ex*.c; do
		[ -e "$c" ] || continue
		grep -q '#include' "$c" || continue
		n=${c##*.ex}; n=${n%.c}
		check "$page: example $n compiles against the header" \
			${CC:-cc} -std=c99 -Wall -Wextra -Werror -Wno-unused-function \
			-I"$top_srcdir/include" -c "$c" -o "$c.o"
		grep -q '^int main(' "$c" || continue
		used=$(grep -oE '\bcvm_[a-z0-9_]+\(' "$c" | tr -d '(' | sort -u)
		exported=$(nm -D --defined-only "$so" 2>/dev/null | awk '{ print $3 }' |
			sed 's/@.*//' | sort -u)
		absent=$(printf '%s\n' $used | grep -vxF "$exported")
		if [ ! -f "$so" ] || [ -n "$absent" ]; then
			skip "$page: example $n runs" "libcvmdma.so does not export$(printf ' %s' $absent) yet"
			continue
		fi
		expected=${c%.c}.expected
		what="links and runs (exit 0)"
		[ -e "$expected" ] && what="$what and prints what the page says"
		check "$page: example $n $what" \
			sh -c '${CC:-cc} $SANITIZED -o "$1.bin" "$1.o" -L"$2" -lcvmdma &&
			LD_LIBRARY_PATH="$2" "$1.bin" >"$1.stdout" || exit
			test ! -e "$3" || diff -u "$3" "$1.stdout"' sh "$c" "${so%/*}" "$expected"
	done
done

# Every page names the version configure builds (AC_INIT), none an older one.
stale=
for f in "$mandir"/*.[137]; do
	v=$(sed -n 's/^\.TH .*"libcvmdma \([0-9][^"]*\)".*/\1/p' "$f")
	[ "$v" = "$PACKAGE_VERSION" ] || stale="$stale ${f##*/}(${v:-none})"
done
check "every page's .TH names libcvmdma $PACKAGE_VERSION${stale:+; not:$stale}" \
	test -n "$PACKAGE_VERSION" -a -z "$stale"

plan "$tap_n"
tap_done
