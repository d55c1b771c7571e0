/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The differences between the kernels abuse.ko targets (Debian's 6.1 and 6.12), in one place.
 * Guards use the upstream version that changed the API (measured: ../shared/vm-notes.md).
 */
#ifndef ABUSE_COMPAT_H
#define ABUSE_COMPAT_H

#include <linux/version.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/device.h>

/* Everything the device's queue limits depend on. */
struct abuse_limits {
	unsigned int block_size;
	unsigned int max_sectors;
	unsigned int max_discard_sectors;	/* 0: no discard */
	unsigned int max_write_zeroes_sectors;	/* 0: no write-zeroes */
	bool write_cache;
	bool fua;
};

/* blk_mq_alloc_disk() with the queue limits set: passed at allocation since 6.11, set with the
 * blk_queue_* setters before. */
static inline struct gendisk *abuse_alloc_disk(struct blk_mq_tag_set *set, void *queuedata,
					       const struct abuse_limits *l)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct queue_limits lim = {
		.logical_block_size = l->block_size,
		.physical_block_size = l->block_size,
		.io_min = l->block_size,
		.max_hw_sectors = l->max_sectors,
		.max_segments = USHRT_MAX,
		.max_hw_discard_sectors = l->max_discard_sectors,
		.discard_granularity = l->max_discard_sectors ? l->block_size : 0,
		.max_write_zeroes_sectors = l->max_write_zeroes_sectors,
	};

	if (l->write_cache)
		lim.features |= BLK_FEAT_WRITE_CACHE;
	if (l->fua)
		lim.features |= BLK_FEAT_FUA;
	return blk_mq_alloc_disk(set, &lim, queuedata);
#else
	struct gendisk *disk = blk_mq_alloc_disk(set, queuedata);
	struct request_queue *q;

	if (IS_ERR(disk))
		return disk;
	q = disk->queue;
	blk_queue_logical_block_size(q, l->block_size);
	blk_queue_physical_block_size(q, l->block_size);
	blk_queue_io_min(q, l->block_size);
	blk_queue_max_hw_sectors(q, l->max_sectors);
	blk_queue_max_segments(q, USHRT_MAX);
	if (l->max_discard_sectors) {
		blk_queue_max_discard_sectors(q, l->max_discard_sectors);
		q->limits.discard_granularity = l->block_size;
	}
	blk_queue_max_write_zeroes_sectors(q, l->max_write_zeroes_sectors);
	blk_queue_write_cache(q, l->write_cache, l->fua);
	blk_queue_flag_set(QUEUE_FLAG_NONROT, q);	/* 6.12's default */
	return disk;
#endif
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define abuse_class_create(name) class_create(name)
#else
#define abuse_class_create(name) class_create(THIS_MODULE, name)
#endif

/* BLK_MQ_F_SHOULD_MERGE is gone (merging is the default) since 6.14. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 14, 0)
#define ABUSE_MQ_FLAGS BLK_MQ_F_SHOULD_MERGE
#else
#define ABUSE_MQ_FLAGS 0
#endif

#endif /* ABUSE_COMPAT_H */
