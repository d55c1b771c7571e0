/* SPDX-License-Identifier: GPL-2.0 */
/* abuse.ko internals shared by main.c (module, char devices), disk.c (block device lifecycle,
 * blk-mq), xfer.c (handing requests to the server and taking its answers) and extents.c (reads
 * answered as file ranges).
 */
#ifndef ABUSE_DEV_H
#define ABUSE_DEV_H

#include <linux/atomic.h>
#include <linux/blk-mq.h>
#include <linux/fs.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <uapi/linux/abuse.h>

/* Where a request is, from the driver's point of view (struct abuse_cmd.state). */
enum abuse_cmd_state {
	ABUSE_CMD_IDLE,		/* not ours, or already ended */
	ABUSE_CMD_PENDING,	/* on its queue's pending list, waiting for a server to fetch it */
	ABUSE_CMD_TAKEN,	/* fetched by cmd.owner, in its queue's inflight[tag] */
	ABUSE_CMD_COMPLETING,	/* its completion is being copied in; ended by the completer */
};

/* Per-request driver data (the blk-mq pdu). */
struct abuse_cmd {
	struct list_head node;
	struct file *owner;
	u32 gen;
	u8 state;
};

/*
 * ad->state holds the uapi's ABUSE_STATE_* and two more that ABUSE_STATUS never shows:
 *   FREE -> RESERVED (ABUSE_CTL_GET_FREE) -> FREE (that control file closed without a setup)
 *   FREE or RESERVED -> SERVING (ABUSE_SETUP) -> WAITING (server gone) -> DEAD (timeout)
 *   WAITING or DEAD -> SERVING (a server reconnects)
 *   SERVING, WAITING or DEAD -> RUNDOWN -> FREE (ABUSE_RESET, module unload)
 * RUNDOWN exists only inside abuse_teardown(), which holds ad->lock throughout: ABUSE_STATUS,
 * which takes ad->lock, never sees it; RESERVED is reported as FREE.
 */
#define ABUSE_STATE_RESERVED	0x100	/* free, promised to the control file ad->reserved_by */
#define ABUSE_STATE_RUNDOWN	0x101	/* the disk is being removed: requests fail */

/*
 * One hardware queue: the requests blk-mq gave it, waiting or fetched. Tags are per queue. The
 * queues live as long as the device (a server thread may still be waiting on one after a
 * reset); only inflight comes and goes with the disk.
 */
struct abuse_queue {
	spinlock_t lock;		/* everything here, and its requests' abuse_cmd */
	struct list_head pending;
	struct request **inflight;	/* by driver tag: requests a server has fetched */
	u32 next_gen;
	wait_queue_head_t wait;		/* server threads waiting for this queue's requests */
} ____cacheline_aligned_in_smp;

/*
 * Lock order: abuse_ctl_mutex (main.c: the index of devices, their creation and removal), then
 * ad->lock, then disk->open_mutex (del_gendisk, the
 * partition scan), then ad->queue_lock or one queue's lock (never two of these at once).
 * ad->state, ad->disk, ad->server and ad->nr_queues are written with both ad->lock and
 * ad->queue_lock held, so a reader needs either one; the one exception is the reconnect timeout
 * (WAITING -> DEAD under queue_lock only: it cannot take ad->lock, as teardown waits for it
 * under ad->lock), which every ad->lock holder tolerates. The request path reads ad->state and
 * ad->server under its queue's lock alone (READ_ONCE): whoever changes them takes every
 * queue's lock afterwards, one at a time, and moves that queue's requests, so a request is
 * either moved by that or queued after it and sees the new value.
 */
struct abuse_dev {
	int index;
	/* Under abuse_ctl_mutex: open files of /dev/abctlN (a device is removed only at 0), and
	 * whether GET_FREE created it (then it is removed once free and closed).
	 */
	unsigned int ctl_openers;
	bool on_demand;
	struct mutex lock;		/* setup, reset, server attach and detach */
	spinlock_t queue_lock;		/* the state and server below */
	u32 state;			/* ABUSE_STATE_*, including the two above */
	struct file *reserved_by;	/* the /dev/abuse-control file, while RESERVED */
	struct file *server;
	u64 features;			/* ABUSE_FEAT_* granted to the server */
	pid_t server_pid;
	atomic64_t completed, errors;
	wait_queue_head_t wait;		/* poll() of the control device */
	unsigned int nr_queues;		/* of the disk; 1 while free */
	struct abuse_queue queues[ABUSE_MAX_QUEUES];

	struct abuse_setup cfg;		/* as the first server set it up */
	struct gendisk *disk;		/* NULL while free */
	struct blk_mq_tag_set tag_set;
	struct delayed_work reconnect_work;
	struct work_struct scan_work;
};

extern unsigned int abuse_reconnect_timeout_ms;
extern int abuse_major;
extern int abuse_part_shift;

/* disk.c */
int abuse_setup(struct abuse_dev *ad, struct file *file, struct abuse_setup *s);
int abuse_teardown(struct abuse_dev *ad, bool force);
void abuse_server_gone(struct abuse_dev *ad, struct file *file);
void abuse_dev_init(struct abuse_dev *ad, int index);
void abuse_fill_status(struct abuse_dev *ad, struct abuse_status *st);
bool abuse_reserve(struct abuse_dev *ad, struct file *ctl);
void abuse_unreserve(struct abuse_dev *ad, struct file *ctl);

/* xfer.c */
long abuse_xfer(struct abuse_dev *ad, struct file *file, struct abuse_xfer __user *uarg);
void abuse_end_list(struct abuse_dev *ad, struct list_head *list, blk_status_t status);
void abuse_wake_all(struct abuse_dev *ad);

/* extents.c */
int abuse_read_extents(struct request *rq, const struct abuse_extent __user *uext, u32 n);

static inline struct request *abuse_cmd_rq(struct abuse_cmd *cmd)
{
	return blk_mq_rq_from_pdu(cmd);
}

#endif /* ABUSE_DEV_H */
