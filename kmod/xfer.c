// SPDX-License-Identifier: GPL-2.0
/*
 * ABUSE_XFER: one call answers a batch of requests and fetches the next one. A request fetched
 * by a file belongs to that file until it is answered, or until the file is closed (then it
 * goes back to the queue: disk.c). A completion must name a request its caller holds, with the
 * generation it was handed out with, or it is refused with EINVAL and ends nothing.
 */
#include <linux/blk-mq.h>
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/uaccess.h>
#include "abuse_dev.h"

/*
 * Copies a request's data between its pages and a server buffer. A page that belongs to the
 * slab allocator (jbd2 writes 1 KiB journal blocks from its own caches, for one) may not be
 * copied to or from user space directly: hardened usercopy refuses slab objects outside a
 * cache's whitelist, with a BUG. Those segments go through a bounce page instead.
 */
static int abuse_copy(struct request *rq, void __user *ubuf, bool to_server)
{
	struct page *bounce = NULL;
	struct req_iterator iter;
	struct bio_vec bv;
	size_t done = 0;
	int ret = 0;

	rq_for_each_segment(bv, rq, iter) {
		void *kaddr = bvec_kmap_local(&bv);
		void *kbuf = kaddr;	/* the kernel side of the user copy */
		unsigned long left;

		if (PageSlab(bv.bv_page)) {
			if (!bounce)
				bounce = alloc_page(GFP_NOIO);
			if (!bounce) {
				kunmap_local(kaddr);
				ret = -ENOMEM;
				break;
			}
			kbuf = page_address(bounce);
			if (to_server)
				memcpy(kbuf, kaddr, bv.bv_len);
		}
		if (to_server) {
			left = copy_to_user(ubuf + done, kbuf, bv.bv_len);
		} else {
			left = copy_from_user(kbuf, ubuf + done, bv.bv_len);
			if (!left && kbuf != kaddr)
				memcpy(kaddr, kbuf, bv.bv_len);
			flush_dcache_page(bv.bv_page);
		}
		kunmap_local(kaddr);
		if (left) {
			ret = -EFAULT;
			break;
		}
		done += bv.bv_len;
	}
	if (bounce)
		__free_page(bounce);
	return ret;
}

void abuse_end_list(struct abuse_dev *ad, struct list_head *list, blk_status_t status)
{
	struct abuse_cmd *cmd, *next;

	list_for_each_entry_safe(cmd, next, list, node) {
		list_del_init(&cmd->node);
		cmd->state = ABUSE_CMD_IDLE;
		if (status != BLK_STS_OK)
			atomic64_inc(&ad->errors);
		blk_mq_end_request(abuse_cmd_rq(cmd), status);
	}
}

/* Every waiting server thread and poller looks again (the state or server changed). */
void abuse_wake_all(struct abuse_dev *ad)
{
	unsigned int i;

	for (i = 0; i < ABUSE_MAX_QUEUES; i++)
		wake_up_all(&ad->queues[i].wait);
	wake_up_all(&ad->wait);
}

static void abuse_unfetch(struct abuse_dev *ad, struct abuse_queue *q, struct request *rq);

/* Returns 0 when the request was answered, -EFAULT when it was ended with an I/O error because
 * its data could not be read, -EINVAL when the completion was refused and ended nothing, -EINTR
 * when the server was killed while the kernel read its extents (the request is queued again).
 */
static int abuse_complete_one(struct abuse_dev *ad, struct abuse_queue *q, struct file *file,
			      const struct abuse_completion *c)
{
	struct abuse_cmd *cmd;
	struct request *rq;
	blk_status_t status = BLK_STS_OK;
	int ret = 0;

	if ((c->flags & ~ABUSE_CPL_FLAGS) || c->reserved[0] || c->reserved[1])
		return -EINVAL;
	if ((c->flags & ABUSE_CPL_EXTENTS) ? !c->n_extents || c->n_extents > ABUSE_MAX_EXTENTS
					   : c->n_extents)
		return -EINVAL;
	spin_lock_irq(&q->lock);
	rq = c->tag < ad->cfg.queue_depth && q->inflight ? q->inflight[c->tag] : NULL;
	cmd = rq ? blk_mq_rq_to_pdu(rq) : NULL;
	if (!cmd || cmd->state != ABUSE_CMD_TAKEN || cmd->owner != file || cmd->gen != c->gen ||
	    ((c->flags & ABUSE_CPL_EXTENTS) && !(READ_ONCE(ad->features) & ABUSE_FEAT_EXTENTS))) {
		spin_unlock_irq(&q->lock);
		return -EINVAL;
	}
	q->inflight[c->tag] = NULL;
	cmd->state = ABUSE_CMD_COMPLETING;
	spin_unlock_irq(&q->lock);

	if (c->result > 0 || c->result < -MAX_ERRNO) {
		status = BLK_STS_IOERR;
	} else if (c->result) {
		status = errno_to_blk_status(c->result);
	} else if (req_op(rq) != REQ_OP_READ) {
		if (c->flags & ABUSE_CPL_EXTENTS)
			status = BLK_STS_IOERR;	/* only reads have data to describe */
	} else if (c->flags & ABUSE_CPL_EXTENTS) {
		int err = abuse_read_extents(rq, u64_to_user_ptr(c->data), c->n_extents);

		if (err == -EINTR) {
			/* The server is being killed mid-read: the next one answers instead. */
			abuse_unfetch(ad, q, rq);
			wake_up(&q->wait);
			return -EINTR;
		}
		if (err == -EFAULT)
			ret = -EFAULT;
		if (err)
			status = err == -EFAULT ? BLK_STS_IOERR : errno_to_blk_status(err);
	} else if (abuse_copy(rq, u64_to_user_ptr(c->data), false)) {
		status = BLK_STS_IOERR;
		ret = -EFAULT;
	}
	atomic64_inc(&ad->completed);
	if (status != BLK_STS_OK)
		atomic64_inc(&ad->errors);
	cmd->state = ABUSE_CMD_IDLE;
	blk_mq_end_request(rq, status);
	return ret;
}

static u16 abuse_op(struct request *rq, u16 *flags)
{
	*flags = 0;
	switch (req_op(rq)) {
	case REQ_OP_WRITE:
		if (rq->cmd_flags & REQ_FUA)
			*flags |= ABUSE_REQ_FUA;
		return ABUSE_OP_WRITE;
	case REQ_OP_FLUSH:
		return ABUSE_OP_FLUSH;
	case REQ_OP_DISCARD:
		return ABUSE_OP_DISCARD;
	case REQ_OP_WRITE_ZEROES:
		if (rq->cmd_flags & REQ_NOUNMAP)
			*flags |= ABUSE_REQ_NOUNMAP;
		return ABUSE_OP_WRITE_ZEROES;
	default:
		return ABUSE_OP_READ;
	}
}

/* Puts a fetched request back at the head of the queue (its hand-over to the server failed). */
static void abuse_unfetch(struct abuse_dev *ad, struct abuse_queue *q, struct request *rq)
{
	struct abuse_cmd *cmd = blk_mq_rq_to_pdu(rq);

	spin_lock_irq(&q->lock);
	q->inflight[rq->tag] = NULL;
	cmd->state = ABUSE_CMD_PENDING;
	cmd->owner = NULL;
	list_add(&cmd->node, &q->pending);
	spin_unlock_irq(&q->lock);
}

static bool abuse_can_fetch(struct abuse_dev *ad, struct abuse_queue *q, struct file *file)
{
	bool ret;

	spin_lock_irq(&q->lock);
	ret = READ_ONCE(ad->server) != file || !list_empty(&q->pending);
	spin_unlock_irq(&q->lock);
	return ret;
}

static int abuse_fetch(struct abuse_dev *ad, struct abuse_queue *q, struct file *file,
		       struct abuse_xfer *x, struct abuse_request __user *ureqs)
{
	u64 data_used = 0;
	u32 max = min(x->max_requests, ad->cfg.queue_depth);

	if (x->data_len < ad->cfg.max_io_bytes)
		return -EINVAL;
	if ((x->flags & ABUSE_XFER_WAIT) &&
	    wait_event_interruptible_exclusive(q->wait, abuse_can_fetch(ad, q, file)))
		return -EINTR;	/* not -ERESTARTSYS: a restart would resend the completions */

	while (x->n_requests < max) {
		struct abuse_request req = {};
		struct abuse_cmd *cmd;
		struct request *rq;

		spin_lock_irq(&q->lock);
		if (READ_ONCE(ad->server) != file) {
			spin_unlock_irq(&q->lock);
			return x->n_requests ? 0 : -ENXIO;
		}
		cmd = list_first_entry_or_null(&q->pending, struct abuse_cmd, node);
		if (!cmd) {
			spin_unlock_irq(&q->lock);
			break;
		}
		rq = abuse_cmd_rq(cmd);
		req.op = abuse_op(rq, &req.flags);
		req.length = blk_rq_bytes(rq);
		if (req.op == ABUSE_OP_WRITE && data_used + req.length > x->data_len) {
			spin_unlock_irq(&q->lock);
			break;	/* the next call takes it */
		}
		list_del_init(&cmd->node);
		cmd->state = ABUSE_CMD_TAKEN;
		cmd->owner = file;
		cmd->gen = ++q->next_gen;
		q->inflight[rq->tag] = rq;
		spin_unlock_irq(&q->lock);

		req.offset = (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
		req.tag = rq->tag;
		req.gen = cmd->gen;
		if (req.op == ABUSE_OP_WRITE) {
			req.data = x->data + data_used;
			if (abuse_copy(rq, u64_to_user_ptr(req.data), true)) {
				abuse_unfetch(ad, q, rq);
				return -EFAULT;
			}
			data_used += req.length;
		}
		if (copy_to_user(&ureqs[x->n_requests], &req, sizeof(req))) {
			abuse_unfetch(ad, q, rq);
			return -EFAULT;
		}
		x->n_requests++;
	}
	return 0;
}

long abuse_xfer(struct abuse_dev *ad, struct file *file, struct abuse_xfer __user *uarg)
{
	struct abuse_completion __user *ucomps;
	struct abuse_queue *q;
	struct abuse_xfer x;
	long ret = 0;
	int i;

	if (copy_from_user(&x, uarg, sizeof(x)))
		return -EFAULT;
	for (i = 0; i < ARRAY_SIZE(x.reserved); i++)
		if (x.reserved[i])
			return -EINVAL;
	if (x.flags & ~ABUSE_XFER_WAIT || x.queue >= ABUSE_MAX_QUEUES)
		return -EINVAL;
	q = &ad->queues[x.queue];
	spin_lock_irq(&q->lock);
	if (READ_ONCE(ad->server) != file)
		ret = -ENXIO;
	else if (x.n_completions > ad->cfg.queue_depth || x.queue >= READ_ONCE(ad->nr_queues))
		ret = -EINVAL;
	spin_unlock_irq(&q->lock);
	if (ret)
		return ret;

	x.n_completed = 0;
	x.n_requests = 0;
	ucomps = u64_to_user_ptr(x.completions);
	for (i = 0; i < x.n_completions; i++) {
		struct abuse_completion c;

		if (copy_from_user(&c, &ucomps[i], sizeof(c))) {
			ret = -EFAULT;
			break;
		}
		ret = abuse_complete_one(ad, q, file, &c);
		if (ret != -EINVAL)
			x.n_completed++;
		if (ret)
			break;
	}
	if (!ret && x.max_requests)
		ret = abuse_fetch(ad, q, file, &x, u64_to_user_ptr(x.requests));

	/* Tell the server how far the call got, whatever happened. */
	if (put_user(x.n_completed, &uarg->n_completed) ||
	    put_user(x.n_requests, &uarg->n_requests))
		return -EFAULT;
	return ret;
}
