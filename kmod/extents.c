// SPDX-License-Identifier: GPL-2.0
/*
 * Read completions given as extents (ABUSE_CPL_EXTENTS): instead of the data, the server says
 * where it lives, as ranges of regular files it has open or runs of zeros, and the kernel reads
 * those into the request's pages itself, as loop does. One copy instead of two, and no server
 * buffer in between: this is what lets an uncompressed image approach loop's speed.
 */
#include <linux/blk-mq.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include "abuse_dev.h"

/* Extents copied in from the server at a time (on the stack). */
#define ABUSE_EXTENT_CHUNK	16

/* Reads one extent into the next e->length bytes of the iterator. */
static int abuse_read_extent(struct iov_iter *iter, const struct abuse_extent *e)
{
	size_t rest = iov_iter_count(iter) - e->length;
	struct file *file;
	loff_t pos = e->offset;
	ssize_t n;

	iov_iter_truncate(iter, e->length);
	if (e->fd == ABUSE_EXTENT_ZERO) {
		n = iov_iter_zero(e->length, iter);
	} else {
		file = fget(e->fd);
		if (!file)
			return -EBADF;
		/* Only regular files: a pipe could block forever, a block device could be our own
		 * (a regular file that blocks, like /proc/kmsg, only stalls the server that
		 * chose it).
		 */
		if (!S_ISREG(file_inode(file)->i_mode)) {
			fput(file);
			return -EBADF;
		}
		n = vfs_iter_read(file, iter, &pos, 0);
		fput(file);
	}
	/* Killed mid-read (any short or failed read then): the request goes to the next server. */
	if (n != e->length && fatal_signal_pending(current))
		return -EINTR;
	if (n < 0)
		return n;
	if (n != e->length)
		return -EIO;	/* the file ends before the extent does */
	iov_iter_reexpand(iter, rest);
	return 0;
}

/*
 * Fills read request rq from the n extents at uext. Returns 0; -EFAULT if the extents cannot be
 * read; -EINTR if the server got a fatal signal (the caller gives the request back to the queue,
 * so the next server answers it and the filesystem above sees no error); another negative errno
 * for a bad description or a failed read.
 */
int abuse_read_extents(struct request *rq, const struct abuse_extent __user *uext, u32 n)
{
	struct abuse_extent chunk[ABUSE_EXTENT_CHUNK];
	struct req_iterator ri;
	struct bio_vec bv, *bvecs;
	struct iov_iter iter;
	unsigned int nr = 0;
	u32 i, j;
	int ret = 0;

	rq_for_each_bvec(bv, rq, ri)
		nr++;
	bvecs = kmalloc_array(nr, sizeof(*bvecs), GFP_NOIO);
	if (!bvecs)
		return -ENOMEM;
	nr = 0;
	rq_for_each_bvec(bv, rq, ri)
		bvecs[nr++] = bv;
	iov_iter_bvec(&iter, ITER_DEST, bvecs, nr, blk_rq_bytes(rq));

	for (i = 0; i < n && !ret; i += ABUSE_EXTENT_CHUNK) {
		u32 count = min_t(u32, n - i, ABUSE_EXTENT_CHUNK);

		if (copy_from_user(chunk, uext + i, count * sizeof(chunk[0]))) {
			ret = -EFAULT;
			break;
		}
		for (j = 0; j < count && !ret; j++) {
			if (!chunk[j].length || chunk[j].length > iov_iter_count(&iter))
				ret = -EIO;	/* the extents must add up to the request */
			else
				ret = abuse_read_extent(&iter, &chunk[j]);
		}
	}
	if (!ret && iov_iter_count(&iter))
		ret = -EIO;
	kfree(bvecs);
	return ret;
}
