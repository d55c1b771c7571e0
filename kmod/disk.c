// SPDX-License-Identifier: GPL-2.0
/*
 * The block device /dev/abuseN: created by a server's ABUSE_SETUP, kept while servers come and
 * go, removed by ABUSE_RESET (or module unload). Requests are queued here for xfer.c to hand
 * out; every request is answered, by a server or with an error.
 */
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include "abuse_compat.h"
#include "abuse_dev.h"

static blk_status_t abuse_queue_rq(struct blk_mq_hw_ctx *hctx, const struct blk_mq_queue_data *bd)
{
	struct request *rq = bd->rq;
	struct abuse_dev *ad = rq->q->queuedata;
	struct abuse_queue *q = &ad->queues[hctx->queue_num];
	struct abuse_cmd *cmd = blk_mq_rq_to_pdu(rq);
	unsigned long flags;
	u32 state;

	switch (req_op(rq)) {
	case REQ_OP_READ:
	case REQ_OP_WRITE:
	case REQ_OP_FLUSH:
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
		break;
	default:
		return BLK_STS_NOTSUPP;
	}
	blk_mq_start_request(rq);
	spin_lock_irqsave(&q->lock, flags);
	state = READ_ONCE(ad->state);	/* see the lock order in abuse_dev.h */
	if (state == ABUSE_STATE_RUNDOWN || state == ABUSE_STATE_DEAD) {
		spin_unlock_irqrestore(&q->lock, flags);
		atomic64_inc(&ad->errors);
		return BLK_STS_IOERR;
	}
	cmd->state = ABUSE_CMD_PENDING;
	cmd->owner = NULL;
	list_add_tail(&cmd->node, &q->pending);
	spin_unlock_irqrestore(&q->lock, flags);
	wake_up(&q->wait);
	if (wq_has_sleeper(&ad->wait))
		wake_up(&ad->wait);	/* poll() */
	return BLK_STS_OK;
}

/* A slow or absent server is handled by the reconnect timeout, not by the block layer's. */
static enum blk_eh_timer_return abuse_timeout(struct request *rq)
{
	return BLK_EH_RESET_TIMER;
}

static int abuse_init_request(struct blk_mq_tag_set *set, struct request *rq,
			      unsigned int hctx_idx, abuse_numa_node_t numa_node)
{
	struct abuse_cmd *cmd = blk_mq_rq_to_pdu(rq);

	INIT_LIST_HEAD(&cmd->node);
	cmd->state = ABUSE_CMD_IDLE;
	return 0;
}

static const struct blk_mq_ops abuse_mq_ops = {
	.queue_rq = abuse_queue_rq,
	.timeout = abuse_timeout,
	.init_request = abuse_init_request,
};

static const struct block_device_operations abuse_bdev_ops = {
	.owner = THIS_MODULE,
};

/* Partitions are read through the server, so scan them after ABUSE_SETUP has returned and the
 * server is fetching requests (as loop does after LOOP_CONFIGURE).
 */
static void abuse_scan_work(struct work_struct *work)
{
	struct abuse_dev *ad = container_of(work, struct abuse_dev, scan_work);
	int err;

	mutex_lock(&ad->disk->open_mutex);
	err = bdev_disk_changed(ad->disk, false);
	mutex_unlock(&ad->disk->open_mutex);
	if (err)
		pr_warn("abuse%d: partition scan failed: %d\n", ad->index, err);
}

/* No server came back in time: fail what waits and everything that comes, until one does. */
static void abuse_reconnect_work(struct work_struct *work)
{
	struct abuse_dev *ad = container_of(to_delayed_work(work), struct abuse_dev,
					     reconnect_work);
	LIST_HEAD(failed);
	unsigned int i;

	spin_lock_irq(&ad->queue_lock);
	if (ad->state != ABUSE_STATE_WAITING) {
		spin_unlock_irq(&ad->queue_lock);
		return;
	}
	WRITE_ONCE(ad->state, ABUSE_STATE_DEAD);
	spin_unlock_irq(&ad->queue_lock);
	for (i = 0; i < ad->nr_queues; i++) {
		spin_lock_irq(&ad->queues[i].lock);
		list_splice_tail_init(&ad->queues[i].pending, &failed);
		spin_unlock_irq(&ad->queues[i].lock);
	}
	pr_warn("abuse%d: no server reconnected within %u ms: I/O fails until one does\n",
		ad->index, ad->cfg.reconnect_timeout_ms);
	abuse_end_list(ad, &failed, BLK_STS_IOERR);
}

static int abuse_check_setup(const struct abuse_setup *s)
{
	int i;

	if (s->version != ABUSE_ABI_VERSION)
		return -EPROTO;
	if (s->features & ~ABUSE_FEATURES)
		return -EINVAL;	/* the ioctl masks them off before */
	for (i = 0; i < ARRAY_SIZE(s->reserved); i++)
		if (s->reserved[i])
			return -EINVAL;
	if (s->reserved0)
		return -EINVAL;
	if (s->nr_queues > ((s->features & ABUSE_FEAT_QUEUES) ? ABUSE_MAX_QUEUES : 0))
		return -EINVAL;
	if (s->flags & ~ABUSE_SETUP_FLAGS)
		return -EINVAL;
	if (s->block_size != 512 && s->block_size != 4096)
		return -EINVAL;
	if (!s->size || s->size % s->block_size ||
	    (s->size >> SECTOR_SHIFT) > (u64)LLONG_MAX >> SECTOR_SHIFT)
		return -EINVAL;
	if (!s->queue_depth || s->queue_depth > ABUSE_MAX_QUEUE_DEPTH)
		return -EINVAL;
	if (s->max_io_bytes < 4096 || s->max_io_bytes > ABUSE_MAX_IO_BYTES ||
	    s->max_io_bytes % 4096)
		return -EINVAL;
	if ((s->flags & ABUSE_FLAG_FUA) && !(s->flags & ABUSE_FLAG_FLUSH))
		return -EINVAL;	/* FUA only means something with a write cache */
	return 0;
}

/* A new server for a device whose server went away: same geometry and features required. */
static int abuse_reattach(struct abuse_dev *ad, struct file *file, struct abuse_setup *s)
{
	const u32 same = ABUSE_SETUP_FLAGS & ~ABUSE_FLAG_RECONNECT;

	if (!(s->flags & ABUSE_FLAG_RECONNECT))
		return -EBUSY;
	if (s->size != ad->cfg.size || s->block_size != ad->cfg.block_size ||
	    (s->flags & same) != (ad->cfg.flags & same))
		return -EINVAL;
	/* The queues are the device's: a server that cannot serve several cannot take it. */
	if (!(s->features & ABUSE_FEAT_QUEUES) && ad->nr_queues > 1)
		return -EINVAL;
	s->nr_queues = ad->nr_queues;
	spin_lock_irq(&ad->queue_lock);
	WRITE_ONCE(ad->server, file);
	ad->features = s->features;	/* a new server may want other features */
	ad->server_pid = task_tgid_vnr(current);
	WRITE_ONCE(ad->state, ABUSE_STATE_SERVING);
	spin_unlock_irq(&ad->queue_lock);
	cancel_delayed_work(&ad->reconnect_work);	/* it checks the state anyway */
	abuse_wake_all(ad);
	pr_info("abuse%d: server %d reconnected\n", ad->index, ad->server_pid);
	return 0;
}

/* With ABUSE_FEAT_QUEUES, the queues asked for (0: one per CPU), as many as there are CPUs. */
static unsigned int abuse_queues_granted(const struct abuse_setup *s)
{
	unsigned int n = s->nr_queues ? s->nr_queues : num_possible_cpus();

	if (!(s->features & ABUSE_FEAT_QUEUES))
		return 1;
	return clamp_t(unsigned int, n, 1, min_t(unsigned int, nr_cpu_ids, ABUSE_MAX_QUEUES));
}

/* Gives each queue its part of `inflight` (NULL: takes them away). */
static void abuse_set_inflight(struct abuse_dev *ad, struct request **inflight)
{
	unsigned int i;

	for (i = 0; i < ad->nr_queues; i++) {
		spin_lock_irq(&ad->queues[i].lock);
		ad->queues[i].inflight = inflight ? inflight + i * ad->cfg.queue_depth : NULL;
		spin_unlock_irq(&ad->queues[i].lock);
	}
}

/* ABUSE_SETUP; on success s->nr_queues is what the device has. */
int abuse_setup(struct abuse_dev *ad, struct file *file, struct abuse_setup *s)
{
	struct abuse_limits lim = {};
	struct request **inflight;
	struct gendisk *disk;
	unsigned int nr_queues;
	int err;

	err = abuse_check_setup(s);
	if (err)
		return err;
	lockdep_assert_held(&ad->lock);
	switch (ad->state) {
	case ABUSE_STATE_FREE:
	case ABUSE_STATE_RESERVED:	/* by whoever asked GET_FREE, or taken by name */
		break;
	case ABUSE_STATE_WAITING:
	case ABUSE_STATE_DEAD:
		return abuse_reattach(ad, file, s);
	default:
		return -EBUSY;
	}
	if (s->flags & ABUSE_FLAG_RECONNECT)
		return -ENODEV;	/* nothing to reconnect to */

	ad->cfg = *s;
	ad->cfg.flags &= ~ABUSE_FLAG_RECONNECT;
	if (!ad->cfg.reconnect_timeout_ms)
		ad->cfg.reconnect_timeout_ms = abuse_reconnect_timeout_ms;

	nr_queues = abuse_queues_granted(s);
	inflight = kcalloc(nr_queues * s->queue_depth, sizeof(*inflight), GFP_KERNEL);
	if (!inflight)
		return -ENOMEM;
	ad->nr_queues = nr_queues;	/* nothing uses the queues while FREE */
	abuse_set_inflight(ad, inflight);
	memset(&ad->tag_set, 0, sizeof(ad->tag_set));
	ad->tag_set.ops = &abuse_mq_ops;
	ad->tag_set.nr_hw_queues = nr_queues;
	ad->tag_set.queue_depth = s->queue_depth;
	ad->tag_set.numa_node = NUMA_NO_NODE;
	ad->tag_set.cmd_size = sizeof(struct abuse_cmd);
	ad->tag_set.flags = ABUSE_MQ_FLAGS;
	ad->tag_set.driver_data = ad;
	err = blk_mq_alloc_tag_set(&ad->tag_set);
	if (err)
		goto free_inflight;

	lim.block_size = s->block_size;
	lim.max_sectors = s->max_io_bytes >> SECTOR_SHIFT;
	/* Request lengths are u32 bytes: keep discards and write-zeroes below 4 GiB. */
	if (s->flags & ABUSE_FLAG_DISCARD)
		lim.max_discard_sectors = (U32_MAX - 4095) >> SECTOR_SHIFT;
	if (s->flags & ABUSE_FLAG_WRITE_ZEROES)
		lim.max_write_zeroes_sectors = (U32_MAX - 4095) >> SECTOR_SHIFT;
	lim.write_cache = s->flags & ABUSE_FLAG_FLUSH;
	lim.fua = s->flags & ABUSE_FLAG_FUA;
	disk = abuse_alloc_disk(&ad->tag_set, ad, &lim);
	if (IS_ERR(disk)) {
		err = PTR_ERR(disk);
		goto free_tags;
	}
	disk->major = abuse_major;
	disk->first_minor = ad->index << abuse_part_shift;
	disk->minors = 1 << abuse_part_shift;
	if (!abuse_part_shift)
		disk->flags |= GENHD_FL_NO_PART;
	disk->fops = &abuse_bdev_ops;
	disk->private_data = ad;
	snprintf(disk->disk_name, DISK_NAME_LEN, "abuse%d", ad->index);
	set_capacity(disk, s->size >> SECTOR_SHIFT);
	set_disk_ro(disk, s->flags & ABUSE_FLAG_READ_ONLY);

	/* The server is inside this ioctl and cannot answer reads yet: no scan in add_disk. */
	set_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	atomic64_set(&ad->completed, 0);
	atomic64_set(&ad->errors, 0);
	spin_lock_irq(&ad->queue_lock);
	WRITE_ONCE(ad->state, ABUSE_STATE_SERVING);
	ad->reserved_by = NULL;
	ad->disk = disk;
	WRITE_ONCE(ad->server, file);
	ad->features = s->features;
	ad->server_pid = task_tgid_vnr(current);
	spin_unlock_irq(&ad->queue_lock);
	err = add_disk(disk);
	if (err)
		goto put_disk;
	clear_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	if (abuse_part_shift)
		schedule_work(&ad->scan_work);
	s->nr_queues = nr_queues;
	return 0;

put_disk:
	spin_lock_irq(&ad->queue_lock);
	WRITE_ONCE(ad->server, NULL);
	ad->server_pid = 0;
	WRITE_ONCE(ad->state, ABUSE_STATE_FREE);
	ad->disk = NULL;
	spin_unlock_irq(&ad->queue_lock);
	put_disk(disk);
free_tags:
	blk_mq_free_tag_set(&ad->tag_set);
free_inflight:
	abuse_set_inflight(ad, NULL);
	ad->nr_queues = 1;
	kfree(inflight);
	return err;
}

/* Moves every request of queue q fetched by `owner` (by anyone when owner is NULL) and not yet
 * answered onto `list`.
 */
static void abuse_collect(struct abuse_dev *ad, struct abuse_queue *q, struct file *owner,
			  struct list_head *list)
{
	unsigned int tag;

	lockdep_assert_held(&q->lock);
	for (tag = 0; tag < ad->cfg.queue_depth; tag++) {
		struct request *rq = q->inflight[tag];
		struct abuse_cmd *cmd;

		if (!rq)
			continue;
		cmd = blk_mq_rq_to_pdu(rq);
		if (owner && cmd->owner != owner)
			continue;
		q->inflight[tag] = NULL;
		cmd->state = ABUSE_CMD_PENDING;
		cmd->owner = NULL;
		list_add_tail(&cmd->node, list);
	}
}

/* Removes the block device. Without `force`, refused while anyone has it open. */
int abuse_teardown(struct abuse_dev *ad, bool force)
{
	LIST_HEAD(failed);
	struct request **inflight;
	unsigned int i;

	lockdep_assert_held(&ad->lock);
	if (ad->state == ABUSE_STATE_FREE || ad->state == ABUSE_STATE_RESERVED)
		return 0;
	if (!force && disk_openers(ad->disk))
		return -EBUSY;

	spin_lock_irq(&ad->queue_lock);
	WRITE_ONCE(ad->state, ABUSE_STATE_RUNDOWN);
	WRITE_ONCE(ad->server, NULL);	/* servers waiting in ABUSE_XFER get ENXIO */
	ad->server_pid = 0;
	spin_unlock_irq(&ad->queue_lock);
	for (i = 0; i < ad->nr_queues; i++) {
		struct abuse_queue *q = &ad->queues[i];

		spin_lock_irq(&q->lock);
		list_splice_tail_init(&q->pending, &failed);
		abuse_collect(ad, q, NULL, &failed);
		spin_unlock_irq(&q->lock);
	}
	abuse_end_list(ad, &failed, BLK_STS_IOERR);
	abuse_wake_all(ad);

	cancel_delayed_work_sync(&ad->reconnect_work);
	flush_work(&ad->scan_work);
	del_gendisk(ad->disk);
	put_disk(ad->disk);
	blk_mq_free_tag_set(&ad->tag_set);

	/* The queues' arrays are one allocation, from the first. */
	inflight = ad->queues[0].inflight;
	abuse_set_inflight(ad, NULL);
	kfree(inflight);
	spin_lock_irq(&ad->queue_lock);
	ad->disk = NULL;
	WRITE_ONCE(ad->server, NULL);
	ad->server_pid = 0;
	ad->nr_queues = 1;
	WRITE_ONCE(ad->state, ABUSE_STATE_FREE);
	spin_unlock_irq(&ad->queue_lock);
	abuse_wake_all(ad);
	return 0;
}

/* The server's file was closed: what it fetched and did not answer goes back to the queue for
 * the next server, and the reconnect timeout starts.
 */
void abuse_server_gone(struct abuse_dev *ad, struct file *file)
{
	unsigned int i;

	mutex_lock(&ad->lock);
	if (ad->server != file) {
		mutex_unlock(&ad->lock);
		return;
	}
	spin_lock_irq(&ad->queue_lock);
	if (ad->disk)
		WRITE_ONCE(ad->state, ABUSE_STATE_WAITING);
	WRITE_ONCE(ad->server, NULL);
	ad->server_pid = 0;
	spin_unlock_irq(&ad->queue_lock);
	for (i = 0; ad->disk && i < ad->nr_queues; i++) {
		struct abuse_queue *q = &ad->queues[i];
		LIST_HEAD(requeue);

		spin_lock_irq(&q->lock);
		abuse_collect(ad, q, file, &requeue);
		list_splice(&requeue, &q->pending);	/* oldest first */
		spin_unlock_irq(&q->lock);
	}
	if (ad->disk) {
		pr_info("abuse%d: server went away; waiting %u ms for a new one\n",
			ad->index, ad->cfg.reconnect_timeout_ms);
		schedule_delayed_work(&ad->reconnect_work,
				      msecs_to_jiffies(ad->cfg.reconnect_timeout_ms));
	}
	mutex_unlock(&ad->lock);
}

void abuse_fill_status(struct abuse_dev *ad, struct abuse_status *st)
{
	struct abuse_cmd *cmd;
	unsigned int tag, i;

	memset(st, 0, sizeof(*st));
	st->version = ABUSE_ABI_VERSION;
	st->index = ad->index;
	st->features = ABUSE_FEATURES;
	mutex_lock(&ad->lock);
	if (ad->disk) {
		st->flags = ad->cfg.flags;
		st->size = ad->cfg.size;
		st->block_size = ad->cfg.block_size;
		st->queue_depth = ad->cfg.queue_depth;
		st->max_io_bytes = ad->cfg.max_io_bytes;
		st->reconnect_timeout_ms = ad->cfg.reconnect_timeout_ms;
		st->openers = disk_openers(ad->disk);
		st->nr_queues = ad->nr_queues;
	}
	spin_lock_irq(&ad->queue_lock);
	/* RUNDOWN cannot be seen here (ad->lock); RESERVED is free to everyone else. */
	st->state = ad->state == ABUSE_STATE_RESERVED ? ABUSE_STATE_FREE : ad->state;
	st->server_pid = ad->server_pid;
	spin_unlock_irq(&ad->queue_lock);
	for (i = 0; i < ad->nr_queues; i++) {
		struct abuse_queue *q = &ad->queues[i];

		spin_lock_irq(&q->lock);
		list_for_each_entry(cmd, &q->pending, node)
			st->pending++;
		if (q->inflight)
			for (tag = 0; tag < ad->cfg.queue_depth; tag++)
				st->in_flight += !!q->inflight[tag];
		spin_unlock_irq(&q->lock);
	}
	st->completed = atomic64_read(&ad->completed);
	st->errors = atomic64_read(&ad->errors);
	mutex_unlock(&ad->lock);
}

/* ABUSE_CTL_GET_FREE: promises a free device to the control file `ctl` until it is closed, so
 * two servers asking at the same time get different devices.
 */
bool abuse_reserve(struct abuse_dev *ad, struct file *ctl)
{
	bool ok;

	mutex_lock(&ad->lock);
	spin_lock_irq(&ad->queue_lock);
	ok = ad->state == ABUSE_STATE_FREE;
	if (ok) {
		ad->state = ABUSE_STATE_RESERVED;
		ad->reserved_by = ctl;
	}
	spin_unlock_irq(&ad->queue_lock);
	mutex_unlock(&ad->lock);
	return ok;
}

/* The control file `ctl` was closed: what it reserved and did not set up is free again. */
void abuse_unreserve(struct abuse_dev *ad, struct file *ctl)
{
	mutex_lock(&ad->lock);
	spin_lock_irq(&ad->queue_lock);
	if (ad->state == ABUSE_STATE_RESERVED && ad->reserved_by == ctl) {
		ad->state = ABUSE_STATE_FREE;
		ad->reserved_by = NULL;
	}
	spin_unlock_irq(&ad->queue_lock);
	mutex_unlock(&ad->lock);
}

void abuse_dev_init(struct abuse_dev *ad, int index)
{
	unsigned int i;

	ad->index = index;
	mutex_init(&ad->lock);
	spin_lock_init(&ad->queue_lock);
	for (i = 0; i < ABUSE_MAX_QUEUES; i++) {
		spin_lock_init(&ad->queues[i].lock);
		INIT_LIST_HEAD(&ad->queues[i].pending);
		init_waitqueue_head(&ad->queues[i].wait);
	}
	ad->nr_queues = 1;
	atomic64_set(&ad->completed, 0);
	atomic64_set(&ad->errors, 0);
	init_waitqueue_head(&ad->wait);
	INIT_DELAYED_WORK(&ad->reconnect_work, abuse_reconnect_work);
	INIT_WORK(&ad->scan_work, abuse_scan_work);
	ad->state = ABUSE_STATE_FREE;
}
