// SPDX-License-Identifier: GPL-2.0
/*
 * Hostile-server test of abuse.ko, run inside the test VM: becomes the server of CTLDEV, then
 *  1. answers fetched requests with forged completions (unknown tag, wrong generation, a tag
 *     never handed out, a duplicate) and checks each is refused with EINVAL and ends nothing;
 *  2. throws random ioctls with random arguments and bad pointers at the device;
 *  3. answers every request it still holds correctly and resets the device.
 * The kernel must survive all of it (the scenario checks dmesg). Exit 0 when every refusal that
 * should happen happened.  Usage: abuse-ioctl-fuzz CTLDEV BLOCKDEV ITERATIONS
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

int main(int argc, char **argv)
{
	if (argc != 4) { fprintf(stderr, "usage: %s CTLDEV BLOCKDEV ITERATIONS\n", argv[0]); return 2; }
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) { perror(argv[1]); return 2; }
	long iters = atol(argv[3]);
	struct abuse_setup s = { .version = ABUSE_ABI_VERSION, .flags = ABUSE_FLAG_READ_ONLY,
		.size = 8 << 20, .block_size = 512, .queue_depth = 4, .max_io_bytes = 1 << 20 };

	/* Bad setups first: each must be refused. */
	struct abuse_setup bad = s; bad.version = 99;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EPROTO, "bad version accepted");
	bad = s; bad.block_size = 1000;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "bad block size accepted");
	bad = s; bad.queue_depth = 1 << 20;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "huge queue depth accepted");
	bad = s; bad.size = 0;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "zero size accepted");
	bad = s; bad.reserved[2] = 1;
	CHECK(ioctl(fd, ABUSE_SETUP, &bad) < 0 && errno == EINVAL, "reserved field accepted");
	CHECK(ioctl(fd, ABUSE_SETUP, (void *)16) < 0 && errno == EFAULT, "bad setup pointer accepted");
	CHECK(ioctl(fd, ABUSE_SETUP, &s) == 0, "good setup refused: %s", strerror(errno));
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
	if (n > 0) {
		struct abuse_completion c = { .tag = req[0].tag, .gen = req[0].gen + 1, .data = (uintptr_t)readbuf };
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with a wrong generation accepted");
		c.gen = req[0].gen; c.tag = 1000000;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with an out-of-range tag accepted");
		c.tag = req[0].tag; c.reserved = 7;
		CHECK(xfer(fd, &c, 1, NULL, 0, 0) == -EINVAL, "completion with reserved bits accepted");
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
		for (int i = 0; i < n; i++) {
			struct abuse_completion ok = { .tag = req[i].tag, .gen = req[i].gen, .data = (uintptr_t)readbuf };
			CHECK(xfer(fd, &ok, 1, NULL, 0, 0) >= 0, "valid completion refused");
			CHECK(xfer(fd, &ok, 1, NULL, 0, 0) == -EINVAL, "duplicate completion accepted");
		}
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

	/* Answer whatever arrived meanwhile, then let go. */
	for (int round = 0; round < 100; round++) {
		n = xfer(fd, NULL, 0, req, 4, 0);
		for (int i = 0; i < n; i++) {
			struct abuse_completion ok = { .tag = req[i].tag, .gen = req[i].gen, .data = (uintptr_t)readbuf };
			xfer(fd, &ok, 1, NULL, 0, 0);
		}
		int st;
		if (waitpid(reader, &st, WNOHANG) == reader) { reader = 0; break; }
		usleep(20000);
	}
	CHECK(reader == 0, "the reader did not finish");
	CHECK(ioctl(fd, ABUSE_RESET) == 0, "reset refused: %s", strerror(errno));
	close(fd);
	printf("abuse-ioctl-fuzz: %ld random ioctls, %d failures\n", iters, failures);
	return failures ? 1 : 0;
}
