// SPDX-License-Identifier: MIT
/*
 * Pinning diagnostics against the real process: CAP_IPC_LOCK as found (root
 * usually has it), then dropped in a forked child with libcap-ng, with
 * RLIMIT_MEMLOCK lowered there, so the parent keeps its privileges.
 */
#include <criterion/criterion.h>
#include "leak-check.h"
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cap-ng.h>

#include "internal.h"
#include "caps.h"

#define SZ_0_1 offsetofend(struct cvm_pin_info, locked_bytes)
#define SKIP_PREFIX "skip: "

/* open(2) and fopen(3) may fail with ENOMEM: armed, this fopen() does so
 * for /proc/self/status (the library's calls resolve to it).  Given
 * fake_status, it hands out that text as the file instead. */
static int fail_status_open;
static const char *fake_status;

FILE *fopen(const char *path, const char *mode)
{
	static FILE *(*real)(const char *, const char *);

	if (fail_status_open && !strcmp(path, "/proc/self/status")) {
		errno = ENOMEM;
		return NULL;
	}
	if (fake_status && !strcmp(path, "/proc/self/status"))
		return fmemopen((void *)fake_status, strlen(fake_status), "r");
	if (!real)
		real = (FILE *(*)(const char *, const char *))dlsym(RTLD_NEXT, "fopen");
	return real(path, mode);
}

/* libcap-ng fails when the kernel will not tell (capget(2)), or when
 * /proc is not mounted: armed, this makes its read of the process's
 * capabilities fail for the library (whose call resolves to it), and
 * for the test's own calls too. */
static int fail_capng_get;

int capng_get_caps_process(void)
{
	static int (*real)(void);

	if (fail_capng_get)
		return -1;
	if (!real)
		real = (int (*)(void))dlsym(RTLD_NEXT, "capng_get_caps_process");
	return real();
}

static bool cap_ipc_lock_effective(void)
{
	return capng_get_caps_process() == 0 &&
	       capng_have_capability(CAPNG_EFFECTIVE, CAP_IPC_LOCK) == 1;
}

static int drop_cap_ipc_lock(void)
{
	if (capng_get_caps_process())
		return -1;
	capng_update(CAPNG_DROP, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_INHERITABLE,
		     CAP_IPC_LOCK);
	return capng_apply(CAPNG_SELECT_CAPS);
}

static int set_memlock(rlim_t bytes)
{
	struct rlimit rl = { bytes, bytes };

	return setrlimit(RLIMIT_MEMLOCK, &rl);
}

/* The child leaves with _exit() (Criterion's exit handlers are the
 * worker's), which skips gcov's: a coverage build writes the child's
 * counts first. */
#ifdef CVM_COVERAGE
void __gcov_dump(void);
#define child_exit(status) (__gcov_dump(), _exit(status))
#else
#define child_exit(status) _exit(status)
#endif

/*
 * Runs fn in a child (so dropped capabilities and lowered limits die with
 * it); fn returns NULL on success, a failure message, or SKIP_PREFIX + why.
 */
static void in_child(const char *(*fn)(void))
{
	char msg[512] = "";
	int pfd[2], status;
	ssize_t n;
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		const char *m = fn();

		close(pfd[0]);
		if (m && write(pfd[1], m, strlen(m)) < 0)
			child_exit(2);
		child_exit(m ? 1 : 0);
	}
	close(pfd[1]);
	n = read(pfd[0], msg, sizeof(msg) - 1);
	close(pfd[0]);
	msg[n > 0 ? n : 0] = '\0';
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child died: status %#x", status);
	if (!strncmp(msg, SKIP_PREFIX, strlen(SKIP_PREFIX)))
		cr_skip_test("%s", msg + strlen(SKIP_PREFIX));
	cr_assert_eq(WEXITSTATUS(status), 0, "%s", msg);
}

static char fail_buf[1024];

#define CHILD_CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			snprintf(fail_buf, sizeof(fail_buf), __VA_ARGS__); \
			return fail_buf; \
		} \
	} while (0)

/* A cvm_pin_info the call must not write: sz as set, every byte past it
 * 0xa5. */
static void poison(struct cvm_pin_info *info, size_t sz)
{
	memset(info, 0xa5, sizeof(*info));
	info->sz = sz;
}

static bool untouched(const struct cvm_pin_info *info, size_t sz)
{
	const uint8_t *b = (const uint8_t *)info;

	if (info->sz != sz)
		return false;
	for (size_t i = sizeof(info->sz); i < sizeof(*info); i++)
		if (b[i] != 0xa5)
			return false;
	return true;
}

Test(caps, pin_check_answers_without_info)
{
	int ret = cvm_pin_check(4096, NULL);

	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
}

Test(caps, pin_check_rejects_sz_short_of_the_first_release_and_changes_nothing)
{
	struct cvm_pin_info info;
	size_t bad[] = { 0, sizeof(size_t), offsetofend(struct cvm_pin_info, cap_ipc_lock),
			 SZ_0_1 - 1 };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		poison(&info, bad[i]);
		cr_assert_eq(cvm_pin_check(4096, &info), -EINVAL, "sz %zu", bad[i]);
		cr_assert(untouched(&info, bad[i]), "sz %zu: info written", bad[i]);
	}
}

/* -ENOMEM is the answer "no", with *info filled: memory short for reading
 * /proc/self/status is "could not tell", and leaves *info alone. */
Test(caps, pin_check_out_of_memory_for_its_probe_is_not_the_answer_no)
{
	struct cvm_pin_info info;
	int ret;

	poison(&info, sizeof(info));
	fail_status_open = 1;
	ret = cvm_pin_check(4096, &info);
	fail_status_open = 0;
	cr_assert_eq(ret, -EAGAIN, "ret %d", ret);
	cr_assert(untouched(&info, sizeof(info)), "info written");
}

/* Without its VmLck line the library cannot tell what is locked already:
 * "could not tell", not a guess of 0, and *info is left alone. */
Test(caps, pin_check_without_a_vmlck_line_is_no_data_and_leaves_info_alone)
{
	struct cvm_pin_info info;
	int ret;

	poison(&info, sizeof(info));
	fake_status = "Name:\ttest-caps\nVmPeak:\t  10000 kB\nVmPin:\t       0 kB\n"
		      "VmLckd:\t     4 kB\n";
	ret = cvm_pin_check(0, &info);
	cr_assert_eq(ret, -ENODATA, "ret %d", ret);
	cr_assert(untouched(&info, sizeof(info)), "info written");
	/* The same file with the line: the interposer is what made the
	 * difference, and the library reads its value. */
	fake_status = "Name:\ttest-caps\nVmLck:\t      8 kB\n";
	ret = cvm_pin_check(0, &info);
	fake_status = NULL;
	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
	cr_assert_eq(info.locked_bytes, 8192);
}

Test(caps, pin_check_is_eio_when_libcapng_cannot_read_the_capabilities)
{
	struct cvm_pin_info info;
	int ret;

	poison(&info, sizeof(info));
	fail_capng_get = 1;
	ret = cvm_pin_check(4096, &info);
	cr_assert_eq(cvm_pin_check(4096, NULL), -EIO);
	fail_capng_get = 0;
	cr_assert_eq(ret, -EIO, "ret %d", ret);
	cr_assert(untouched(&info, sizeof(info)), "info written");
	ret = cvm_pin_check(4096, &info);
	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
}

/*
 * An sz above 4096 (one left unset, typically) is -E2BIG before anything
 * past the known fields is read: the zeroed tail here would pass the check
 * of the bytes past them, so only the size limit can refuse it.  4096
 * itself is still a size the library accepts.
 */
Test(caps, pin_check_refuses_an_sz_above_4096_without_reading_past_the_fields)
{
	static struct { struct cvm_pin_info info; uint8_t tail[8192]; } big;
	const size_t bad[] = { 4096 + 1, 4096 + 8, 8192, SIZE_MAX };
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&big, 0, sizeof(big));
		big.info.sz = bad[i];
		big.info.memlock_limit = 0xa5a5a5a5a5a5a5a5u;
		ret = cvm_pin_check(4096, &big.info);
		cr_assert_eq(ret, -E2BIG, "sz %zu: %d", bad[i], ret);
		cr_assert_eq(big.info.memlock_limit, 0xa5a5a5a5a5a5a5a5u, "sz %zu: info written",
			     bad[i]);
		cr_assert_eq(big.info.sz, bad[i]);
	}
	memset(&big, 0, sizeof(big));
	big.info.sz = 4096;
	ret = cvm_pin_check(4096, &big.info);
	cr_assert(ret == 0 || ret == -ENOMEM, "sz 4096: %d", ret);
	cr_assert_neq(big.info.memlock_limit, 0, "sz 4096: info not filled");
}

Test(caps, pin_check_writes_reserved_as_zero)
{
	struct cvm_pin_info info;
	int ret;

	poison(&info, sizeof(info));
	ret = cvm_pin_check(4096, &info);
	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
	cr_assert_eq(info.reserved, 0, "reserved must read 0, not the caller's bytes");
	cr_assert(info.cap_ipc_lock <= 1);
}

Test(caps, pin_check_rejects_nonzero_bytes_past_known_fields)
{
	struct { struct cvm_pin_info info; uint64_t future; } big;
	int ret;

	memset(&big, 0, sizeof(big));
	big.info.sz = sizeof(big);
	big.future = 1;
	cr_assert_eq(cvm_pin_check(4096, &big.info), -E2BIG);
	big.future = 0;
	ret = cvm_pin_check(4096, &big.info);
	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
	cr_assert_eq(big.info.sz, sizeof(big), "sz must be kept");
	cr_assert_eq(big.future, 0, "bytes past the known fields must stay untouched");
	cr_assert_neq(big.info.memlock_limit, 0);
	/* Past the fields it knows, the library reads nothing: a sz that ends
	 * half-way through a later version's field is fine while it is zero. */
	memset(&big, 0, sizeof(big));
	big.info.sz = sizeof(big.info) + 4;
	ret = cvm_pin_check(4096, &big.info);
	cr_assert(ret == 0 || ret == -ENOMEM, "ret %d", ret);
}

Test(caps, pin_check_with_cap_ipc_lock_allows_any_size)
{
	struct cvm_pin_info info = { .sz = sizeof(info) };

	if (!cap_ipc_lock_effective())
		cr_skip_test("CAP_IPC_LOCK is not effective in this process");
	cr_assert_eq(cvm_pin_check(UINT64_MAX, &info), 0);
	cr_assert_eq(info.cap_ipc_lock, 1);
}

static const char *memlock_enforced_exactly(void)
{
	const uint64_t limit = 256 * 1024;
	struct cvm_pin_info info = { .sz = sizeof(info) };
	uint64_t before, room;
	void *page;
	int ret;

	CHILD_CHECK(drop_cap_ipc_lock() == 0, "cannot drop CAP_IPC_LOCK");
	CHILD_CHECK(set_memlock(limit) == 0, "setrlimit: %s", strerror(errno));
	CHILD_CHECK(cvm_pin_check(0, &info) == 0, "pin_check(0) failed");
	CHILD_CHECK(info.cap_ipc_lock == 0, "still reports CAP_IPC_LOCK");
	CHILD_CHECK(info.memlock_limit == limit, "limit %llu", (unsigned long long)info.memlock_limit);
	before = info.locked_bytes;

	/* Locking a page must show up in what is counted. */
#ifdef __SANITIZE_ADDRESS__
	return SKIP_PREFIX "AddressSanitizer turns mlock() into a no-op";
#endif
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHILD_CHECK(page != MAP_FAILED && mlock(page, 4096) == 0, "mlock: %s", strerror(errno));
	CHILD_CHECK(cvm_pin_check(0, &info) == 0, "pin_check(0) failed after mlock");
	CHILD_CHECK(info.locked_bytes == before + 4096, "VmLck %llu, expected %llu",
		    (unsigned long long)info.locked_bytes, (unsigned long long)before + 4096);

	room = limit - info.locked_bytes;
	ret = cvm_pin_check(room, NULL);
	CHILD_CHECK(ret == 0, "exactly the room left: %d", ret);
	ret = cvm_pin_check(room + 4096, NULL);
	CHILD_CHECK(ret == -ENOMEM, "one page past the limit: %d", ret);
	ret = cvm_pin_check(UINT64_MAX, &info);
	CHILD_CHECK(ret == -ENOMEM, "UINT64_MAX: %d", ret);
	CHILD_CHECK(info.memlock_limit == limit, "info not filled on -ENOMEM");
	return NULL;
}

Test(caps, pin_check_without_cap_ipc_lock_enforces_memlock_to_the_page)
{
	in_child(memlock_enforced_exactly);
}

static const char *unlimited_memlock(void)
{
	struct cvm_pin_info info = { .sz = sizeof(info) };

	if (set_memlock(RLIM_INFINITY))
		return SKIP_PREFIX "cannot raise RLIMIT_MEMLOCK to unlimited here";
	CHILD_CHECK(drop_cap_ipc_lock() == 0, "cannot drop CAP_IPC_LOCK");
	CHILD_CHECK(cvm_pin_check(UINT64_MAX, &info) == 0, "unlimited but refused");
	CHILD_CHECK(info.memlock_limit == UINT64_MAX, "limit %llu",
		    (unsigned long long)info.memlock_limit);
	CHILD_CHECK(info.cap_ipc_lock == 0, "still reports CAP_IPC_LOCK");
	return NULL;
}

Test(caps, pin_check_without_cap_ipc_lock_allows_any_size_when_memlock_is_unlimited)
{
	in_child(unlimited_memlock);
}

static const char *capng_state_untouched(void)
{
	capng_clear(CAPNG_SELECT_BOTH);
	capng_update(CAPNG_ADD, CAPNG_EFFECTIVE, CAP_NET_ADMIN);
	cvm_pin_check(4096, NULL);
	CHILD_CHECK(capng_have_capability(CAPNG_EFFECTIVE, CAP_NET_ADMIN) == 1,
		    "the caller's libcap-ng state lost CAP_NET_ADMIN");
	CHILD_CHECK(capng_have_capability(CAPNG_EFFECTIVE, CAP_IPC_LOCK) == 0,
		    "the caller's libcap-ng state was replaced by the process's");
	return NULL;
}

Test(caps, pin_check_keeps_the_callers_libcapng_state)
{
	in_child(capng_state_untouched);
}

struct logged { int n, n_err; char msg[512]; };

static void log_cb(void *opaque, int prio, const char *msg)
{
	struct logged *l = opaque;

	l->n++;
	if (prio == LOG_ERR)
		l->n_err++;
	snprintf(l->msg, sizeof(l->msg), "%s", msg);
}

static const char *diagnose_without_cap(void)
{
	static const char *const want[] = {
		"1024 KiB", "Cannot allocate memory", "no CAP_IPC_LOCK", "RLIMIT_MEMLOCK 64 KiB",
		"exceeds it", "raise RLIMIT_MEMLOCK", "grant CAP_IPC_LOCK",
		"IOMMU_OPTION_RLIMIT_MODE",
	};
	struct logged l = { 0 };

	CHILD_CHECK(drop_cap_ipc_lock() == 0, "cannot drop CAP_IPC_LOCK");
	CHILD_CHECK(set_memlock(64 * 1024) == 0, "setrlimit: %s", strerror(errno));
	cvm_set_log(log_cb, &l, LOG_DEBUG);
	cvm_pin_diagnose(1024 * 1024, -ENOMEM);
	CHILD_CHECK(l.n == 1 && l.n_err == 1, "%d lines, %d at LOG_ERR", l.n, l.n_err);
	for (size_t i = 0; i < ARRAY_SIZE(want); i++)
		CHILD_CHECK(strstr(l.msg, want[i]), "no \"%s\" in: %s", want[i], l.msg);
	return NULL;
}

Test(caps, pin_diagnose_names_missing_cap_the_limit_and_the_remedy)
{
	in_child(diagnose_without_cap);
}

static const char *locked_past_the_limit(void)
{
	struct cvm_pin_info info = { .sz = sizeof(info) };
	struct logged l = { 0 };
	int ret;

	CHILD_CHECK(drop_cap_ipc_lock() == 0, "cannot drop CAP_IPC_LOCK");
	CHILD_CHECK(set_memlock(64 * 1024) == 0, "setrlimit: %s", strerror(errno));
	cvm_set_log(log_cb, &l, LOG_DEBUG);
	/* 128 KiB locked before the limit came down to 64 KiB. */
	fake_status = "Name:\ttest-caps\nVmLck:\t     128 kB\n";
	ret = cvm_pin_check(0, &info);
	CHILD_CHECK(ret == -ENOMEM, "0 bytes past a limit already passed: %d", ret);
	CHILD_CHECK(info.locked_bytes == 128 * 1024 && info.memlock_limit == 64 * 1024,
		    "locked %llu, limit %llu", (unsigned long long)info.locked_bytes,
		    (unsigned long long)info.memlock_limit);
	ret = cvm_pin_check(4096, NULL);
	CHILD_CHECK(ret == -ENOMEM, "4096 bytes past a limit already passed: %d", ret);
	cvm_pin_diagnose(4096, -ENOMEM);
	CHILD_CHECK(strstr(l.msg, "128 KiB locked already") && strstr(l.msg, "exceeds it"), "%s",
		    l.msg);
	/* Well within the limit, a refusal is blamed on pins counted elsewhere. */
	fake_status = "Name:\ttest-caps\nVmLck:\t       0 kB\n";
	ret = cvm_pin_check(4096, NULL);
	CHILD_CHECK(ret == 0, "4096 bytes within the limit: %d", ret);
	cvm_pin_diagnose(4096, -ENOMEM);
	CHILD_CHECK(strstr(l.msg, "fits, but pins charged elsewhere count"), "%s", l.msg);
	fake_status = NULL;
	cvm_set_log(NULL, NULL, 0);
	return NULL;
}

/*
 * RLIMIT_MEMLOCK may be lowered below what the process has locked already:
 * then no byte more fits, 0 included (what is left must not wrap around to
 * "plenty"), and the diagnosis says the request exceeds the limit.  A
 * refused pin that fits the limit is put down to pins the kernel charged
 * elsewhere (iommufd's per-user accounting), not to the limit.
 */
Test(caps, pin_check_past_a_limit_lowered_below_what_is_locked_is_enomem_for_any_size)
{
	in_child(locked_past_the_limit);
}

Test(caps, pin_diagnose_with_cap_ipc_lock_blames_memory_not_the_limit)
{
	struct logged l = { 0 };

	if (!cap_ipc_lock_effective())
		cr_skip_test("CAP_IPC_LOCK is not effective in this process");
	cvm_set_log(log_cb, &l, LOG_DEBUG);
	cvm_pin_diagnose(4096, -ENOMEM);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(l.n_err, 1);
	cr_assert(strstr(l.msg, "has CAP_IPC_LOCK"), "%s", l.msg);
	cr_assert_null(strstr(l.msg, "raise RLIMIT_MEMLOCK"), "%s", l.msg);
}

Test(caps, pin_diagnose_costs_nothing_without_a_logger_at_err)
{
	struct logged l = { 0 };

	cvm_set_log(log_cb, &l, LOG_CRIT);
	cvm_pin_diagnose(4096, -ENOMEM);
	cvm_set_log(NULL, NULL, 0);
	cr_assert_eq(l.n, 0);
}

/*
 * A refused pin is reported even when the limits cannot be read (libcap-ng
 * fails, or /proc/self/status cannot be opened): one LOG_ERR line with the
 * request, the kernel's error and why the limits are missing, and no
 * limits or remedy made up from what was never read.
 */
Test(caps, pin_diagnose_says_so_when_it_cannot_read_the_pinning_limits)
{
	const struct { int *arm; int err; } cases[] = {
		{ &fail_capng_get, EIO }, { &fail_status_open, ENOMEM },
	};
	char want[128];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct logged l = { 0 };

		cvm_set_log(log_cb, &l, LOG_DEBUG);
		*cases[i].arm = 1;
		cvm_pin_diagnose(1024 * 1024, -ENOMEM);
		*cases[i].arm = 0;
		cvm_set_log(NULL, NULL, 0);
		cr_assert(l.n == 1 && l.n_err == 1, "case %zu: %d lines, %d at LOG_ERR", i, l.n,
			  l.n_err);
		snprintf(want, sizeof(want), "could not read the pinning limits (%s)",
			 strerror(cases[i].err));
		cr_assert(strstr(l.msg, "pinning 1024 KiB for DMA failed (Cannot allocate memory)"),
			  "case %zu: %s", i, l.msg);
		cr_assert(strstr(l.msg, want), "case %zu: %s", i, l.msg);
		cr_assert_null(strstr(l.msg, "RLIMIT_MEMLOCK"), "case %zu: %s", i, l.msg);
	}
}
