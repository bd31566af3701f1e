# SPDX-License-Identifier: MIT
# Turn the guest's serial console (tests/vm/init's @@CVM markers) into one
# TAP stream: a harness test, then each TAP line of each program as a line
# of our own prefixed with the program's name.  Used by guest-check.sh.
#   awk -v kernel=A -v names="prog1 prog2" -f guest-tap.awk
# Exit status 1 if any "not ok" was printed.

function emit(ok, desc) {
	n++
	# A "not ok ... # TODO" is an expected failure, not a broken run.
	if (!ok && desc !~ /#[ \t]*[Tt][Oo][Dd][Oo]/)
		bad = 1
	print (ok ? "ok " : "not ok ") n " - " desc
	fflush()
}

function start(name) {
	cur = name
	planned = -1
	ran = 0
	failed = 0
	skipall = ""
	bailed = 0
	misnum = ""
}

# A hex number ("0x..."); exact below 2^53, which IOVAs here are.
function hexval(s,   i, c, v) {
	v = 0
	s = tolower(s)
	sub(/^0x/, "", s)
	for (i = 1; i <= length(s); i++) {
		c = index("0123456789abcdef", substr(s, i, 1))
		if (!c)
			return -1
		v = v * 16 + c - 1
	}
	return v
}

# The same, written: "0x" and lower-case digits (mawk's %x stops at 2^32).
function hexstr(v,   s, d) {
	s = ""
	do {
		d = v % 16
		s = substr("0123456789abcdef", d + 1, 1) s
		v = (v - d) / 16
	} while (v >= 1)
	return "0x" s
}

# QEMU's trace of the vIOMMU's IOTLB invalidations (qemu-run --trace), in
# the order QEMU handled them: per line its kind by event name (P: pages
# of a domain, D: a whole domain, G: everything, X: an event or a format
# not known here), its domain, and for P the bytes [taddr, taddr + tlen)
# (the address aligned to the size, as the vIOMMU reads it).
function load_trace(   line, f, ev) {
	loaded = 1
	ntr = 0
	if (trace == "")
		return
	while ((getline line < trace) > 0) {
		if (!match(line, /vtd_inv_desc_iotlb_[a-z_]+/))
			continue
		ev = substr(line, RSTART, RLENGTH)
		ntr++
		tkind[ntr] = "X"
		if (ev == "vtd_inv_desc_iotlb_pages" || ev == "vtd_inv_desc_iotlb_pasid_pages") {
			if (match(line, /domain 0x[0-9a-fA-F]+ addr 0x[0-9a-fA-F]+ mask 0x[0-9a-fA-F]+/)) {
				split(substr(line, RSTART, RLENGTH), f, " ")
				tkind[ntr] = "P"
				tdom[ntr] = hexval(f[2])
				tlen[ntr] = 4096 * 2 ^ hexval(f[6])
				taddr[ntr] = hexval(f[4])
				taddr[ntr] -= taddr[ntr] % tlen[ntr]
			}
		} else if (ev == "vtd_inv_desc_iotlb_domain" || ev == "vtd_inv_desc_iotlb_pasid") {
			if (match(line, /domain 0x[0-9a-fA-F]+/)) {
				split(substr(line, RSTART, RLENGTH), f, " ")
				tkind[ntr] = "D"
				tdom[ntr] = hexval(f[2])
			}
		} else if (ev == "vtd_inv_desc_iotlb_global") {
			tkind[ntr] = "G"
		}
	}
	close(trace)
}

# The marker invalidation of the page at iova, at or after entry from (in
# domain dom, if dom >= 0): its entry, or 0.
function find_marker(iova, from, dom,   i) {
	for (i = from; i <= ntr; i++)
		if (tkind[i] == "P" && taddr[i] == iova && tlen[i] == 4096 && (dom < 0 || tdom[i] == dom))
			return i
	return 0
}

# A guest program's claim "IOTLB BEGIN END LO HI only|none|beyond" about
# the invalidations of the domain between the two marker invalidations
# (tests/vm/guest-iotlb.c): 1 if the trace bears it out, else 0; iotlb_why
# says what the trace showed, or why nothing was checked (iotlb_skip).
# only: every page of [LO, HI) invalidated, and nothing outside it (an
# invalidation that reaches past it counts as beyond, though it covers it).
function iotlb_check(spec,   f, b, e, lo, hi, kind, i, j, k, dom, n, in_, out, unk, ok,
		     p, c, nin, ia, il, seen, whole) {
	if (!loaded)
		load_trace()
	iotlb_skip = 0
	if (trace == "") {
		iotlb_skip = 1
		iotlb_why = "no vIOMMU trace (tests/vm/guest-check.sh --trace records one)"
		return 1
	}
	if (!ntr) {
		iotlb_why = "the trace " trace " holds no vtd_inv_desc_iotlb_* event"
		return 0
	}
	split(spec, f, " ")
	b = hexval(f[2]); e = hexval(f[3]); lo = hexval(f[4]); hi = hexval(f[5]); kind = f[6]
	if (kind != "only" && kind != "none" && kind != "beyond") {
		iotlb_why = "unknown claim '" kind "'"
		return 0
	}
	i = find_marker(b, tcur + 1, -1)
	if (!i) {
		iotlb_why = "the marker invalidation of " f[2] " is not in the trace"
		return 0
	}
	dom = tdom[i]
	j = find_marker(e, i + 1, dom)
	if (!j) {
		iotlb_why = "the marker invalidation of " f[3] " is not in the trace after " f[2]
		return 0
	}
	tcur = j
	n = in_ = out = unk = nin = whole = 0
	seen = ""
	for (k = i + 1; k < j; k++) {
		if (tkind[k] == "X") {
			unk++
			continue
		}
		if (tkind[k] != "G" && tdom[k] != dom)
			continue
		n++
		# What the domain saw, for the message of a claim that fails.
		if (n <= 8)
			seen = seen (n > 1 ? " " : "") (tkind[k] == "P" ? \
				hexstr(taddr[k]) "+" tlen[k] / 1024 "K" : \
				tkind[k] == "D" ? "domain" : "global")
		if (tkind[k] == "P") {
			ia[++nin] = taddr[k]
			il[nin] = tlen[k]
		} else {
			whole = 1
		}
		if (tkind[k] == "P" && taddr[k] >= lo && taddr[k] + tlen[k] <= hi)
			in_++
		else
			out++
	}
	# Pages of [lo, hi) that no invalidation covered.
	c = 0
	for (p = lo; p < hi && !whole; p += 4096) {
		for (k = 1; k <= nin && !(ia[k] <= p && p < ia[k] + il[k]); k++)
			;
		c += k > nin
	}
	ok = unk == 0 && (kind == "only" ? in_ > 0 && out == 0 && c == 0 : \
			  kind == "none" ? n == 0 : out > 0)
	iotlb_why = "vIOMMU: " n " invalidation" (n == 1 ? "" : "s") " in domain " dom ", " in_ \
		" inside [" f[4] ", " f[5] "), " out " beyond" \
		(kind == "only" && c ? ", " c " of its pages not invalidated" : "") \
		(unk ? ", " unk " of a kind not known here" : "") \
		(ok || !n ? "" : ": " seen (n > 8 ? " ..." : ""))
	return ok
}

# One line of the current program's output.
function tapline(l,   rest, num, spec) {
	if (l ~ /^(not )?ok([ \t]|$)/) {
		rest = l
		sub(/^(not )?ok[ \t]*/, "", rest)
		num = rest
		sub(/[^0-9].*$/, "", num)
		sub(/^[0-9]*[ \t]*(-[ \t]*)?/, "", rest)
		if (rest == "" || rest ~ /^#/)
			rest = "test " num (rest == "" ? "" : " " rest)
		ran++
		# Numbers are optional, but a number that is there must be the next one.
		if (num != "" && num + 0 != ran && misnum == "")
			misnum = "result " ran " is numbered " num
		# A claim about the vIOMMU's invalidations: checked against the trace.
		if (match(rest, /#[ \t]*IOTLB .*$/)) {
			spec = substr(rest, RSTART, RLENGTH)
			sub(/^#[ \t]*/, "", spec)
			rest = substr(rest, 1, RSTART - 1)
			sub(/[ \t]+$/, "", rest)
			if (!iotlb_check(spec) && l !~ /^not/)
				l = "not " l
			rest = rest (iotlb_skip ? " # SKIP " : " (") iotlb_why (iotlb_skip ? "" : ")")
		}
		if (l ~ /^not/ && rest !~ /#[ \t]*[Tt][Oo][Dd][Oo]/)
			failed++
		# The directive (# SKIP / # TODO) stays at the end, so it keeps its meaning.
		emit(l !~ /^not/, cur ": " rest)
	} else if (l ~ /^1\.\.[0-9]+/) {
		planned = substr(l, 4) + 0
		if (l ~ /#[ \t]*[Ss][Kk][Ii][Pp]/) {
			skipall = l
			sub(/^[^#]*#[ \t]*[Ss][Kk][Ii][Pp][^ \t]*[ \t]*/, "", skipall)
			if (skipall == "")
				skipall = "skipped"
		}
	} else if (l ~ /^Bail out!/) {
		failed++
		bailed = 1
		emit(0, cur ": " l)
	} else {
		sub(/^#[ \t]*/, "", l)
		print "# " cur ": " l
	}
}

# The program exited with status st: report what its own lines did not.
function finish(name, st,   problem) {
	done[name] = 1
	if (ran == 0 && planned == 0 && st == 0) {
		emit(1, name " # SKIP " (skipall != "" ? skipall : "no tests"))
		return
	}
	if (ran == 0 && st == 77) {
		emit(1, name " # SKIP exit status 77")
		return
	}
	# A bail-out before any result was the failure, and said why.
	if (ran == 0 && bailed)
		return
	if (ran == 0) {
		emit(0, name ": " (planned == 0 ? "skipped every test, then exit status " st \
			: "printed no TAP result (exit status " st ")"))
		return
	}
	problem = ""
	if (planned < 0 && !bailed)
		problem = "printed no plan"
	else if (planned >= 0 && planned != ran)
		problem = "planned " planned " tests, ran " ran
	if (misnum != "")
		problem = problem (problem == "" ? "" : ", ") misnum
	# A crash is news even after a failed test; a plain exit 1 after one is not.
	if ((st != 0 && failed == 0) || st > 128)
		problem = problem (problem == "" ? "" : ", ") "exit status " st \
			(st == 137 ? " (killed: timeout)" : st > 128 ? " (signal)" : "")
	if (problem != "")
		emit(0, name ": " problem)
}

{ sub(/\r$/, "") }

/^@@CVM-BOOT ok / {
	booted = 1
	emit(1, "harness: kernel " kernel " boots, edu " $3 " bound to vfio-pci (group " $4 ")")
	print "# guest uptime when tests start: " $6 " s"
	next
}
/^@@CVM-BOOT fail/ {
	booted = 1
	emit(0, "harness: kernel " kernel " boots with edu bound to vfio-pci")
	print "# " $0
	next
}
/^@@CVM-BEGIN / { start($2); inprog = 1; next }
/^@@CVM-END / { inprog = 0; next }
# Output that did not end in a newline carries the end marker on its line.
inprog && /@@CVM-END [^ ]*$/ { sub(/@@CVM-END [^ ]*$/, ""); tapline($0); inprog = 0; next }
/^@@CVM-RESULT / { inprog = 0; finish($2, $3); next }
/^@@CVM-DMESG-BEGIN / { indmesg = 1; dname = $2; next }
/^@@CVM-DMESG-END / { indmesg = 0; next }
/^@@CVM-GCOV-BEGIN/ { ingcov = 1; gcov = 0; next }
/^@@CVM-GCOV-END/ { ingcov = 0; print "# coverage counts from the guest: " gcov " lines of base64"; next }
/^@@CVM-DONE/ { print "# guest uptime at poweroff: " $2 " s"; next }
/^@@CVM-QEMU-EXIT / { qemu = $2; next }
# After QEMU's status: a guest that died mid-dump still says why.
ingcov { gcov++; next }
# A kernel warning, bug or oops while a program ran fails it, though it passed.
indmesg && dname != "boot" && !(dname in kbad) &&
    /^(WARNING: |BUG: |Oops|general protection fault|Kernel panic|kernel BUG at)/ {
	kbad[dname] = 1
	emit(0, dname ": the kernel logged: " $0)
}
indmesg { print "# " dname ": dmesg: " $0; next }
inprog { tapline($0); next }
{ print "# console: " $0 }

END {
	why = "no result: the guest died, hung or timed out"
	if (qemu != "")
		why = why " (qemu-run exit " qemu ")"
	if (!booted)
		emit(0, "harness: kernel " kernel " boots with edu bound to vfio-pci (" why ")")
	if (inprog)
		emit(0, cur ": " why)
	cnt = split(names, list, " ")
	for (i = 1; i <= cnt; i++)
		if (!(list[i] in done) && !(inprog && list[i] == cur))
			emit(0, list[i] ": " why)
	print "1.." n
	exit bad
}
