// SPDX-License-Identifier: GPL-2.0
/* Queue limits and features (write cache, FUA, rotational) are passed to blk_mq_alloc_disk()
 * in a struct queue_limits, and the blk_queue_* setters are gone: upstream "block: pass a
 * queue_limits argument to blk_mq_alloc_disk" (6.9) and "block: move the write cache and FUA
 * flags to queue_limits" and related (6.11).
 */
#include <linux/blk-mq.h>

struct gendisk *abuse_probe(struct blk_mq_tag_set *set);
struct gendisk *abuse_probe(struct blk_mq_tag_set *set)
{
	struct queue_limits lim = { .features = BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA };

	return blk_mq_alloc_disk(set, &lim, NULL);
}
