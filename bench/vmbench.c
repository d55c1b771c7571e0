/* Block-device reader and writer for the in-VM bench (bench/vm.sh): O_DIRECT, no page cache.
 *   vmbench seq DEV               read the whole device in 1 MiB requests; prints "MB/s"
 *   vmbench rand DEV QD SECONDS   random 4 KiB reads from QD threads (queue depth QD) for
 *                                 SECONDS; prints "IOPS"
 *   vmbench wseq DEV              write the whole device in 1 MiB requests, then fsync; "MB/s"
 *   vmbench wrand DEV QD SECONDS  random 4 KiB writes, as rand; fsync at the end; "IOPS"
 * Offsets come from a fixed-seed xorshift per thread, so runs are comparable. Writes are a
 * non-zero pattern (zeros could be stored as holes or zero flags and flatter the writer). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int fd, writing;
static uint64_t dev_size;
static double deadline;
static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void *rand_worker(void *arg) {
	uint64_t x = 88172645463325252ull + (uintptr_t)arg * 7919, done = 0, blocks = dev_size / 4096;
	void *buf;
	if (posix_memalign(&buf, 4096, 4096)) return NULL;
	memset(buf, 0x5a + (int)(uintptr_t)arg, 4096);
	while (now() < deadline) {
		for (int i = 0; i < 16; i++) {
			x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
			uint64_t off = (x * 0x2545f4914f6cdd1dull) % blocks * 4096;
			ssize_t r = writing ? pwrite(fd, buf, 4096, off) : pread(fd, buf, 4096, off);
			if (r != 4096) { perror(writing ? "pwrite" : "pread"); exit(1); }
			done++;
		}
	}
	free(buf);
	return (void *)(uintptr_t)done;
}

int main(int argc, char **argv) {
	if (argc < 3) { fprintf(stderr, "usage: vmbench seq|wseq DEV | rand|wrand DEV QD SECONDS\n"); return 2; }
	writing = argv[1][0] == 'w';
	const char *mode = argv[1] + writing;
	fd = open(argv[2], (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0 || ioctl(fd, BLKGETSIZE64, &dev_size) < 0) { perror(argv[2]); return 1; }
	if (mode[0] == 's') {
		size_t bs = 1 << 20;
		void *buf;
		if (posix_memalign(&buf, 4096, bs)) return 1;
		memset(buf, 0xa5, bs);
		double t0 = now();
		uint64_t off = 0;
		while (off < dev_size) {
			size_t n = dev_size - off < bs ? dev_size - off : bs;
			ssize_t r = writing ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
			if (r != (ssize_t)n) { perror(writing ? "pwrite" : "pread"); return 1; }
			off += n;
		}
		if (writing && fsync(fd)) { perror("fsync"); return 1; }
		printf("%.1f\n", dev_size / (now() - t0) / 1e6);
		return 0;
	}
	if (argc < 5) return 2;
	int qd = atoi(argv[3]);
	double secs = atof(argv[4]), t0 = now();
	pthread_t th[256];
	if (qd < 1 || qd > 256) return 2;
	deadline = t0 + secs;
	for (int i = 0; i < qd; i++) pthread_create(&th[i], NULL, rand_worker, (void *)(uintptr_t)i);
	uint64_t total = 0;
	for (int i = 0; i < qd; i++) { void *r; pthread_join(th[i], &r); total += (uintptr_t)r; }
	if (writing && fsync(fd)) { perror("fsync"); return 1; }
	printf("%.0f\n", total / (now() - t0));
	return 0;
}
