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
	struct abuse_cmd *cmd = blk_mq_rq_to_pdu(rq);
	unsigned long flags;

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
	spin_lock_irqsave(&ad->queue_lock, flags);
	if (ad->state == ABUSE_STATE_RUNDOWN || ad->state == ABUSE_STATE_DEAD) {
		ad->errors++;
		spin_unlock_irqrestore(&ad->queue_lock, flags);
		return BLK_STS_IOERR;
	}
	cmd->state = ABUSE_CMD_PENDING;
	cmd->owner = NULL;
	list_add_tail(&cmd->node, &ad->pending);
	spin_unlock_irqrestore(&ad->queue_lock, flags);
	wake_up(&ad->wait);
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

	spin_lock_irq(&ad->queue_lock);
	if (ad->state != ABUSE_STATE_WAITING) {
		spin_unlock_irq(&ad->queue_lock);
		return;
	}
	ad->state = ABUSE_STATE_DEAD;
	list_splice_init(&ad->pending, &failed);
	spin_unlock_irq(&ad->queue_lock);
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
static int abuse_reattach(struct abuse_dev *ad, struct file *file, const struct abuse_setup *s)
{
	const u32 same = ABUSE_SETUP_FLAGS & ~ABUSE_FLAG_RECONNECT;

	if (!(s->flags & ABUSE_FLAG_RECONNECT))
		return -EBUSY;
	if (s->size != ad->cfg.size || s->block_size != ad->cfg.block_size ||
	    (s->flags & same) != (ad->cfg.flags & same))
		return -EINVAL;
	spin_lock_irq(&ad->queue_lock);
	ad->server = file;
	ad->features = s->features;	/* a new server may want other features */
	ad->server_pid = task_tgid_vnr(current);
	ad->state = ABUSE_STATE_SERVING;
	spin_unlock_irq(&ad->queue_lock);
	cancel_delayed_work(&ad->reconnect_work);	/* it checks the state anyway */
	wake_up_all(&ad->wait);
	pr_info("abuse%d: server %d reconnected\n", ad->index, ad->server_pid);
	return 0;
}

int abuse_setup(struct abuse_dev *ad, struct file *file, const struct abuse_setup *s)
{
	struct abuse_limits lim = {};
	struct gendisk *disk;
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

	ad->inflight = kcalloc(s->queue_depth, sizeof(*ad->inflight), GFP_KERNEL);
	if (!ad->inflight)
		return -ENOMEM;
	memset(&ad->tag_set, 0, sizeof(ad->tag_set));
	ad->tag_set.ops = &abuse_mq_ops;
	ad->tag_set.nr_hw_queues = 1;
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
	spin_lock_irq(&ad->queue_lock);
	ad->state = ABUSE_STATE_SERVING;
	ad->reserved_by = NULL;
	ad->disk = disk;
	ad->server = file;
	ad->features = s->features;
	ad->server_pid = task_tgid_vnr(current);
	ad->completed = 0;
	ad->errors = 0;
	spin_unlock_irq(&ad->queue_lock);
	err = add_disk(disk);
	if (err)
		goto put_disk;
	clear_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	if (abuse_part_shift)
		schedule_work(&ad->scan_work);
	return 0;

put_disk:
	spin_lock_irq(&ad->queue_lock);
	ad->server = NULL;
	ad->server_pid = 0;
	ad->state = ABUSE_STATE_FREE;
	ad->disk = NULL;
	spin_unlock_irq(&ad->queue_lock);
	put_disk(disk);
free_tags:
	blk_mq_free_tag_set(&ad->tag_set);
free_inflight:
	kfree(ad->inflight);
	ad->inflight = NULL;
	return err;
}

/* Moves every request not yet answered (pending, or fetched by `owner`, or by anyone when
 * owner is NULL) onto `list`.
 */
static void abuse_collect(struct abuse_dev *ad, struct file *owner, struct list_head *list)
{
	unsigned int tag;

	lockdep_assert_held(&ad->queue_lock);
	for (tag = 0; tag < ad->cfg.queue_depth; tag++) {
		struct request *rq = ad->inflight[tag];
		struct abuse_cmd *cmd;

		if (!rq)
			continue;
		cmd = blk_mq_rq_to_pdu(rq);
		if (owner && cmd->owner != owner)
			continue;
		ad->inflight[tag] = NULL;
		cmd->state = ABUSE_CMD_PENDING;
		cmd->owner = NULL;
		list_add_tail(&cmd->node, list);
	}
}

/* Removes the block device. Without `force`, refused while anyone has it open. */
int abuse_teardown(struct abuse_dev *ad, bool force)
{
	LIST_HEAD(failed);

	lockdep_assert_held(&ad->lock);
	if (ad->state == ABUSE_STATE_FREE || ad->state == ABUSE_STATE_RESERVED)
		return 0;
	if (!force && disk_openers(ad->disk))
		return -EBUSY;

	spin_lock_irq(&ad->queue_lock);
	ad->state = ABUSE_STATE_RUNDOWN;
	ad->server = NULL;	/* servers waiting in ABUSE_XFER get ENXIO */
	ad->server_pid = 0;
	list_splice_init(&ad->pending, &failed);
	abuse_collect(ad, NULL, &failed);
	spin_unlock_irq(&ad->queue_lock);
	abuse_end_list(ad, &failed, BLK_STS_IOERR);
	wake_up_all(&ad->wait);

	cancel_delayed_work_sync(&ad->reconnect_work);
	flush_work(&ad->scan_work);
	del_gendisk(ad->disk);
	put_disk(ad->disk);
	blk_mq_free_tag_set(&ad->tag_set);

	spin_lock_irq(&ad->queue_lock);
	kfree(ad->inflight);
	ad->inflight = NULL;
	ad->disk = NULL;
	ad->server = NULL;
	ad->server_pid = 0;
	ad->state = ABUSE_STATE_FREE;
	spin_unlock_irq(&ad->queue_lock);
	wake_up_all(&ad->wait);
	return 0;
}

/* The server's file was closed: what it fetched and did not answer goes back to the queue for
 * the next server, and the reconnect timeout starts.
 */
void abuse_server_gone(struct abuse_dev *ad, struct file *file)
{
	mutex_lock(&ad->lock);
	if (ad->server != file) {
		mutex_unlock(&ad->lock);
		return;
	}
	spin_lock_irq(&ad->queue_lock);
	if (ad->disk) {
		LIST_HEAD(requeue);

		abuse_collect(ad, file, &requeue);
		list_splice(&requeue, &ad->pending);	/* oldest first */
		ad->state = ABUSE_STATE_WAITING;
	}
	ad->server = NULL;
	ad->server_pid = 0;
	spin_unlock_irq(&ad->queue_lock);
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
	unsigned int tag;

	memset(st, 0, sizeof(*st));
	st->version = ABUSE_ABI_VERSION;
	st->index = ad->index;
	mutex_lock(&ad->lock);
	if (ad->disk) {
		st->flags = ad->cfg.flags;
		st->size = ad->cfg.size;
		st->block_size = ad->cfg.block_size;
		st->queue_depth = ad->cfg.queue_depth;
		st->max_io_bytes = ad->cfg.max_io_bytes;
		st->reconnect_timeout_ms = ad->cfg.reconnect_timeout_ms;
		st->openers = disk_openers(ad->disk);
	}
	spin_lock_irq(&ad->queue_lock);
	/* RUNDOWN cannot be seen here (ad->lock); RESERVED is free to everyone else. */
	st->state = ad->state == ABUSE_STATE_RESERVED ? ABUSE_STATE_FREE : ad->state;
	list_for_each_entry(cmd, &ad->pending, node)
		st->pending++;
	if (ad->inflight)
		for (tag = 0; tag < ad->cfg.queue_depth; tag++)
			st->in_flight += !!ad->inflight[tag];
	st->completed = ad->completed;
	st->errors = ad->errors;
	st->server_pid = ad->server_pid;
	spin_unlock_irq(&ad->queue_lock);
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
	ad->index = index;
	mutex_init(&ad->lock);
	spin_lock_init(&ad->queue_lock);
	INIT_LIST_HEAD(&ad->pending);
	init_waitqueue_head(&ad->wait);
	INIT_DELAYED_WORK(&ad->reconnect_work, abuse_reconnect_work);
	INIT_WORK(&ad->scan_work, abuse_scan_work);
	ad->state = ABUSE_STATE_FREE;
}
