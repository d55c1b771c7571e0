// SPDX-License-Identifier: GPL-2.0
/*
 * Hostile-server test of abuse.ko, run inside the test VM: becomes the server of CTLDEV, then
 *  1. answers fetched requests with forged completions (unknown tag, wrong generation, a tag
 *     never handed out, a duplicate) and checks each is refused with EINVAL and ends nothing;
 *  2. answers one request in each form a completion can take, good and bad (extents
 *     included), and checks which reads succeed;
 *  3. throws random ioctls with random arguments and bad pointers at the device, and resets it;
 *  4. sets it up again without ABUSE_FEAT_EXTENTS and checks extents are then refused.
 * Throughout: unknown feature bits are masked off, non-zero reserved fields refused.
 * The kernel must survive all of it (the scenario checks dmesg). Exit 0 when every refusal that
 * should happen happened.  Usage: abuse-ioctl-fuzz CTLDEV BLOCKDEV ITERATIONS
 *
 * abuse-ioctl-fuzz --control ITERATIONS SEED: random ABUSE_CTL_ADD, ABUSE_CTL_REMOVE and
 * ABUSE_CTL_GET_FREE on /dev/abuse-control, meant to race other fuzzers and servers attaching
 * and detaching: every answer must be one the ABI allows, a device GET_FREE reserved must exist
 * and read as free, and REMOVE must never take a device in use (the servers' data checks).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/abuse.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); failures++; } } while (0)

static char databuf[4 << 20];
static char readbuf[1 << 20];

static int xfer(int fd, struct abuse_completion *c, unsigned nc, struct abuse_request *r, unsigned nr, unsigned flags)
{
	struct abuse_xfer x = {
		.completions = (uintptr_t)c, .n_completions = nc,
		.requests = (uintptr_t)r, .max_requests = nr,
		.data = (uintptr_t)databuf, .data_len = sizeof(databuf), .flags = flags,
	};
	int ret = ioctl(fd, ABUSE_XFER, &x);
	return ret < 0 ? -errno : (int)x.n_requests;
}

/* Answers req in one of FORMS ways: a buffer, extents of zeros, or extents that are short of
 * the request, run past it, name a bad fd, a pipe, the control device, a file that ends too
 * early, or an unreadable address. A bad description ends the request with an error and the
 * call goes on; an unreadable address stops the call with EFAULT. Either way the completion
 * was taken: sending it again is refused. */
#define FORMS 9
static void answer_in_form(int fd, const struct abuse_request *req, int form)
{
	static int pipefd[2] = { -1, -1 }, tiny = -1;
	__u32 len = req->length;
	struct abuse_extent ext[2] = { { .length = len, .fd = ABUSE_EXTENT_ZERO } };
	struct abuse_completion c = { .tag = req->tag, .gen = req->gen, .data = (uintptr_t)readbuf };
	int want = 0, got;

	if (pipefd[0] < 0) {
		CHECK(pipe(pipefd) == 0, "pipe");
		tiny = open("/tmp/abuse-fuzz-tiny", O_RDWR | O_CREAT | O_TRUNC, 0600);
		CHECK(tiny >= 0 && write(tiny, "x", 1) == 1, "cannot make a 1-byte file");
	}
	if (form > 0) {
		c.flags = ABUSE_CPL_EXTENTS; c.n_extents = 1; c.data = (uintptr_t)ext;
	}
	switch (form) {
	case 2: ext[0].length = len / 2; break;					/* short of the request */
	case 3: ext[0].length = len / 2; ext[1] = ext[0]; ext[1].length = len;
		c.n_extents = 2; break;						/* past the request */
	case 4: ext[0].fd = 9999; break;					/* not an open fd */
	case 5: ext[0].fd = pipefd[0]; break;					/* would block forever */
	case 6: ext[0].fd = fd; break;						/* a char device */
	case 7: ext[0].fd = tiny; break;					/* past the file's end */
	case 8: c.data = 16; want = -EFAULT; break;				/* unreadable extents */
	}
	got = xfer(fd, &c, 1, NULL, 0, 0);
	CHECK(want ? got == want : got >= 0, "completion form %d: got %d", form, got);
	CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "duplicate completion accepted (form %d)", form);
}

/* Indexes the control fuzz plays with: beyond the devices created at load, fewer than the
 * servers racing it need, so ADD, REMOVE and GET_FREE meet on the same ones. */
#define CTL_SPAN 96

static int control_fuzz(long iters, unsigned int seed)
{
	int ctl = open("/dev/abuse-control", O_RDWR);
	long r;

	if (ctl < 0) { perror("/dev/abuse-control"); return 2; }
	srand(seed);
	CHECK(ioctl(ctl, ABUSE_CTL_ADD, -2L) < 0 && errno == EINVAL, "ADD -2 accepted");
	CHECK(ioctl(ctl, ABUSE_CTL_ADD, 1L << 30) < 0 && errno == EINVAL, "ADD past the minor space accepted");
	CHECK(ioctl(ctl, ABUSE_CTL_REMOVE, ~0UL) < 0 && errno == ENODEV, "REMOVE of no index: %s", strerror(errno));
	CHECK(ioctl(ctl, ABUSE_CTL_REMOVE, 1UL << 40) < 0 && errno == ENODEV, "REMOVE past the index space");
	for (long i = 0; i < iters; i++) {
		long idx = rand() % CTL_SPAN;
		switch (rand() % 4) {
		case 0:
			r = ioctl(ctl, ABUSE_CTL_ADD, idx);
			CHECK(r == idx || (r < 0 && errno == EEXIST), "ADD %ld: %ld (%s)", idx, r, strerror(errno));
			break;
		case 1:
			r = ioctl(ctl, ABUSE_CTL_ADD, -1L);
			CHECK(r >= 0, "ADD -1: %s", strerror(errno));
			break;
		case 2:
			r = ioctl(ctl, ABUSE_CTL_REMOVE, idx);
			CHECK(r == 0 || (r < 0 && (errno == ENODEV || errno == EBUSY)),
			      "REMOVE %ld: %ld (%s)", idx, r, strerror(errno));
			break;
		default: {
			/* A reservation of its own file: the device exists, is free, and REMOVE
			 * leaves it alone until the file is closed. */
			int own = open("/dev/abuse-control", O_RDWR);
			char path[32];
			int n, dev;

			CHECK(own >= 0, "open /dev/abuse-control: %s", strerror(errno));
			n = ioctl(own, ABUSE_CTL_GET_FREE);
			CHECK(n >= 0, "GET_FREE: %s", strerror(errno));
			if (n >= 0) {
				CHECK(ioctl(ctl, ABUSE_CTL_REMOVE, (long)n) < 0 && errno == EBUSY,
				      "REMOVE of reserved device %d: %s", n, strerror(errno));
				snprintf(path, sizeof(path), "/dev/abctl%d", n);
				dev = open(path, O_RDWR);
				CHECK(dev >= 0, "GET_FREE gave %d, but %s: %s", n, path, strerror(errno));
				if (dev >= 0) {
					struct abuse_status st;

					CHECK(ioctl(dev, ABUSE_STATUS, &st) == 0 && st.state == ABUSE_STATE_FREE &&
					      st.index == (__u32)n, "reserved device %d not free", n);
					close(dev);
				}
			}
			close(own);
		}
		}
	}
	close(ctl);
	printf("abuse-ioctl-fuzz --control: %ld control ioctls, %d failures\n", iters, failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--control"))
		return control_fuzz(atol(argv[2]), (unsigned int)atoi(argv[3]));
	if (argc != 4) { fprintf(stderr, "usage: %s CTLDEV BLOCKDEV ITERATIONS\n", argv[0]); return 2; }
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) { perror(argv[1]); return 2; }
	long iters = atol(argv[3]);
	/* Every feature bit, known or not: the module grants the ones it has. */
	struct abuse_setup s = { .version = ABUSE_ABI_VERSION, .flags = ABUSE_FLAG_READ_ONLY,
		.size = 8 << 20, .block_size = 512, .queue_depth = 4, .max_io_bytes = 1 << 20,
		.features = ~0ULL, .nr_queues = 1 };

	/* Bad setups first: each must be refused. */
	struct abuse_setup bad = s; bad.version = 99;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EPROTO, "bad version accepted");
	bad = s; bad.block_size = 1000;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "bad block size accepted");
	bad = s; bad.queue_depth = 1 << 20;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "huge queue depth accepted");
	bad = s; bad.size = 0;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "zero size accepted");
	bad = s; bad.reserved[1] = 1;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "reserved field accepted");
	bad = s; bad.reserved0 = 1;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "reserved0 accepted");
	bad = s; bad.nr_queues = ABUSE_MAX_QUEUES + 1;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "too many queues accepted");
	bad = s; bad.features = ABUSE_FEAT_EXTENTS; bad.nr_queues = 2;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "nr_queues accepted without ABUSE_FEAT_QUEUES");
	struct abuse_status st0;
	CHECK(ioctl(fd, ABUSE_STATUS, &st0) == 0 && st0.features == ABUSE_FEATURES,
	      "status does not list the module's features");
	CHECK(ioctl(fd, ABUSE_SETUP, (void *)16) < 0 && errno == EFAULT, "bad setup pointer accepted");
	CHECK(ioctl(fd, ABUSE_SETUP, &s) == 0, "good setup refused: %s", strerror(errno));
	CHECK(s.features == ABUSE_FEATURES, "asked for every feature, granted %#llx (want %#llx)",
	      (unsigned long long)s.features, (unsigned long long)ABUSE_FEATURES);
	CHECK(s.nr_queues == 1, "asked for one queue, got %u", s.nr_queues);
	{
		/* Only queue 0 exists; the other fields of an xfer stay reserved. */
		struct abuse_xfer x = { .queue = 1 };
		CHECK(ioctl(fd, ABUSE_XFER, &x) < 0 && errno == EINVAL, "xfer on a queue the device lacks");
		x.queue = ABUSE_MAX_QUEUES;
		CHECK(ioctl(fd, ABUSE_XFER, &x) < 0 && errno == EINVAL, "xfer past ABUSE_MAX_QUEUES");
		x.queue = 0; x.reserved[1] = 1;
		CHECK(ioctl(fd, ABUSE_XFER, &x) < 0 && errno == EINVAL, "xfer reserved field accepted");
	}
	CHECK(ioctl(fd, ABUSE_SETUP, &s) < 0 && errno == EBUSY, "second setup accepted");

	/* A reader of the block device gives us requests to hold. */
	pid_t reader = fork();
	if (reader == 0) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "dd if=%s of=/dev/null bs=4096 count=64 2>/dev/null", argv[2]);
		_exit(system(cmd) == 0 ? 0 : 1);
	}
	/* poll() says when there is a request to fetch. */
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 10000) == 1 && (pfd.revents & POLLIN), "poll() did not report a pending request");
	struct abuse_request req[4];
	int n = 0;
	for (int tries = 0; tries < 200 && n <= 0; tries++) {
		n = xfer(fd, NULL, 0, req, 4, 0);
		if (n <= 0) usleep(50000);
	}
	CHECK(n > 0, "no request arrived (%d)", n);
	for (int i = 0; i < n; i++)
		CHECK(!req[i].reserved[0] && !req[i].reserved[1], "request with non-zero reserved fields");
	if (n > 0) {
		struct abuse_completion c = { .tag = req[0].tag, .gen = req[0].gen + 1, .data = (uintptr_t)readbuf };
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with a wrong generation accepted");
		c.gen = req[0].gen; c.tag = 1000000;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with an out-of-range tag accepted");
		c.tag = req[0].tag; c.flags = 0x80;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with an unknown flag accepted");
		c.flags = 0; c.reserved[1] = 1;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with a non-zero reserved field accepted");
		c.reserved[1] = 0; c.reserved[0] = 1ULL << 63;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with a non-zero reserved field accepted");
		c.reserved[0] = 0; c.n_extents = 1;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "extent count without ABUSE_CPL_EXTENTS accepted");
		c.flags = ABUSE_CPL_EXTENTS; c.n_extents = 0;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "ABUSE_CPL_EXTENTS with no extents accepted");
		c.n_extents = ABUSE_MAX_EXTENTS + 1;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "more than ABUSE_MAX_EXTENTS extents accepted");
		c.flags = 0; c.n_extents = 0;
		/* A tag that is not in flight (queue depth 4: one of them is free). */
		for (unsigned t = 0; t < 4; t++) {
			int held = 0;
			for (int i = 0; i < n; i++) held |= req[i].tag == t;
			if (held) continue;
			struct abuse_completion f = { .tag = t, .gen = req[0].gen, .data = (uintptr_t)readbuf };
			CHECK(xfer(fd, &f, 1, NULL, 0, 0) == -EINVAL, "completion for tag %u never handed out accepted", t);
		}
		/* A huge completion count is refused before anything is read. */
		struct abuse_xfer hx = { .n_completions = 1u << 31, .completions = (uintptr_t)&c };
		CHECK(ioctl(fd, ABUSE_XFER, &hx) < 0 && errno == EINVAL, "huge completion count accepted");
		/* The right answers are still accepted afterwards, and only once. */
		for (int i = 0; i < n; i++)
			answer_in_form(fd, &req[i], 0);
	}
	/* Serve the reader to its end, so what follows gets only the requests it expects. */
	for (int round = 0; round < 500 && reader; round++) {
		n = xfer(fd, NULL, 0, req, 4, 0);
		for (int i = 0; i < n; i++)
			answer_in_form(fd, &req[i], 0);
		if (waitpid(reader, NULL, WNOHANG) == reader)
			reader = 0;
		else if (n <= 0)
			usleep(20000);
	}
	CHECK(reader == 0, "the reader did not finish");

	/* Every form of answer, each to a request of its own (a 4 KiB O_DIRECT read). */
	for (int form = 0; form < FORMS; form++) {
		pid_t one = fork();
		if (one == 0) {
			char cmd[256];
			snprintf(cmd, sizeof(cmd), "dd if=%s of=/dev/null bs=4096 count=1 skip=%d iflag=direct 2>/dev/null",
				 argv[2], 100 + form);
			_exit(system(cmd) == 0 ? 0 : 1);
		}
		struct abuse_request r;
		int got = 0;
		for (int tries = 0; tries < 200 && got <= 0; tries++) {
			got = xfer(fd, NULL, 0, &r, 1, 0);
			if (got <= 0) usleep(20000);
		}
		CHECK(got == 1, "no request for form %d", form);
		if (got == 1)
			answer_in_form(fd, &r, form);
		int st = 0;
		waitpid(one, &st, 0);
		/* Only the good forms may give the reader its data. */
		CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0) == (form <= 1), "form %d: reader status %d", form, st);
	}

	/* Random ioctls: random numbers, random sizes, bad pointers, random structs. */
	srand(12345);
	for (long i = 0; i < iters; i++) {
		unsigned long nr = (unsigned long)rand() << 1 ^ rand();
		unsigned long cmds[] = { ABUSE_SETUP, ABUSE_XFER, ABUSE_STATUS, nr, _IOWR(0xAB, rand() % 8, char[64]) };
		unsigned long cmd = cmds[rand() % 5];
		char junk[128];
		for (unsigned j = 0; j < sizeof(junk); j++) junk[j] = rand();
		void *ptrs[] = { junk, NULL, (void *)1, (void *)-4096L, (void *)0xffff800000000000UL };
		void *arg = ptrs[rand() % 5];
		if (cmd == ABUSE_XFER && arg == junk) {
			struct abuse_xfer *x = (void *)junk;	/* never wait: nothing would wake us */
			x->flags &= ~ABUSE_XFER_WAIT;
			x->n_completions %= 8;
			x->max_requests = 0;	/* requests we took would never be answered */
		}
		if (cmd == ABUSE_SETUP)
			continue;	/* would only say EBUSY; covered above */
		ioctl(fd, cmd, arg);
	}

	CHECK(ioctl(fd, ABUSE_RESET) == 0, "reset refused: %s", strerror(errno));

	/* A server that did not ask for ABUSE_FEAT_EXTENTS may not answer with extents. */
	s.features = 0;
	s.nr_queues = 0;	/* as a server older than ABUSE_FEAT_QUEUES: one queue */
	CHECK(ioctl(fd, ABUSE_SETUP, &s) == 0, "setup without features refused: %s", strerror(errno));
	CHECK(s.features == 0, "granted %#llx without asking", (unsigned long long)s.features);
	pid_t last = fork();
	if (last == 0) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "dd if=%s of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null", argv[2]);
		_exit(system(cmd) == 0 ? 0 : 1);
	}
	/* Serve until the reader is done (the partition scan reads too); the first request is
	 * also answered with extents, which must be refused and end nothing. */
	int refused = 0;
	for (int round = 0; round < 500 && last; round++) {
		struct abuse_request r;
		int got = xfer(fd, NULL, 0, &r, 1, 0);
		if (got == 1 && !refused) {
			struct abuse_extent zero = { .length = r.length, .fd = ABUSE_EXTENT_ZERO };
			struct abuse_completion c = { .tag = r.tag, .gen = r.gen, .flags = ABUSE_CPL_EXTENTS,
						      .n_extents = 1, .data = (uintptr_t)&zero };
			CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "extents accepted without ABUSE_FEAT_EXTENTS");
			refused = 1;
		}
		if (got == 1)
			answer_in_form(fd, &r, 0);
		int st = 0;
		if (waitpid(last, &st, WNOHANG) == last) {
			CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader after the second setup: status %d", st);
			last = 0;
		} else if (got <= 0) {
			usleep(20000);
		}
	}
	CHECK(refused && !last, "the reader after the second setup did not finish");
	CHECK(ioctl(fd, ABUSE_RESET) == 0, "second reset refused: %s", strerror(errno));
	close(fd);
	printf("abuse-ioctl-fuzz: %ld random ioctls, %d failures\n", iters, failures);
	return failures ? 1 : 0;
}
