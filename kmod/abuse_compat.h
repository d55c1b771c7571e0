/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every difference between the kernels abuse.ko builds on (Debian's 6.1 to 7.3, RT included),
 * in one place. Each is decided by a compile test in compat/ (see Kbuild), named after the
 * upstream change, never by the kernel version: vendor kernels backport changes.
 */
#ifndef ABUSE_COMPAT_H
#define ABUSE_COMPAT_H

#include "abuse_probed.h"	/* generated: ABUSE_HAVE_* from the tests in compat/ */
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

/* blk_mq_alloc_disk() with the queue limits set: passed at allocation (6.11 upstream), set with
 * the blk_queue_* setters before. compat/queue_limits_features.c
 */
static inline struct gendisk *abuse_alloc_disk(struct blk_mq_tag_set *set, void *queuedata,
					       const struct abuse_limits *l)
{
#ifdef ABUSE_HAVE_QUEUE_LIMITS_FEATURES
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

/* class_create() lost its module argument (6.4). compat/class_create_name_only.c */
#ifdef ABUSE_HAVE_CLASS_CREATE_NAME_ONLY
#define abuse_class_create(name) class_create(name)
#else
#define abuse_class_create(name) class_create(THIS_MODULE, name)
#endif

/* BLK_MQ_F_SHOULD_MERGE is gone, merging being the default (6.14).
 * compat/blk_mq_f_should_merge.c
 */
#ifdef ABUSE_HAVE_BLK_MQ_F_SHOULD_MERGE
#define ABUSE_MQ_FLAGS BLK_MQ_F_SHOULD_MERGE
#else
#define ABUSE_MQ_FLAGS 0
#endif

/* blk_mq_ops.init_request's numa_node parameter became int ("blk-mq: nvme: Fix general
 * protection fault in nvme_setup_descriptor_pools()", 2026; Debian 7.2 and 7.3 have it).
 * compat/init_request_int_node.c
 * checkpatch --strict warns "do not add new typedefs": kept on purpose, a typedef is the one
 * way to give a callback parameter a type that differs by kernel without #ifdefs at its use.
 */
#ifdef ABUSE_HAVE_INIT_REQUEST_INT_NODE
typedef int abuse_numa_node_t;
#else
typedef unsigned int abuse_numa_node_t;
#endif

#endif /* ABUSE_COMPAT_H */
