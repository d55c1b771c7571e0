/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * abuse: A Block device in User SpacE.
 *
 * The one definition of the ABI between abuse.ko and its userspace servers. Every struct has a
 * fixed size with explicit padding; src/abuse/uapi.rs mirrors it and asserts each size and
 * offset, and tests/uapi_layout.rs compares them with a C program compiled against this file.
 *
 * Devices: /dev/abctlN is the control (char) device through which a server serves the block
 * device /dev/abuseN (partitions /dev/abuseNpM). /dev/abuse-control finds a free N, creating
 * one when none is free, and adds or removes devices (as loop-control does).
 *
 * A server opens /dev/abctlN, sends ABUSE_SETUP, then loops on ABUSE_XFER: each call completes
 * the requests it answered and fetches the next batch. Requests fetched by a file and not
 * answered when it is closed go back to the queue for the next server (ABUSE_FLAG_RECONNECT);
 * if none sets up within the reconnect timeout, they fail with EIO. ABUSE_RESET removes the
 * block device (refused with EBUSY while it is open).
 *
 * Growing the ABI: ABUSE_ABI_VERSION changes only for an incompatible change (the module refuses
 * any other version with EPROTO). Anything optional is a feature bit: the server sets in
 * abuse_setup.features what it wants to use, the module clears the bits it does not know or
 * support and writes the struct back, and both sides use only what came back. New fields come
 * out of the reserved space, which must be zero until a feature bit gives it a meaning: the
 * module refuses non-zero reserved fields from a server with EINVAL and zeroes its own.
 */
#ifndef _UAPI_LINUX_ABUSE_H
#define _UAPI_LINUX_ABUSE_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* 3: feature bits; reserved space in requests and completions */
#define ABUSE_ABI_VERSION	3

/* Limits the module enforces on struct abuse_setup. */
#define ABUSE_MAX_QUEUE_DEPTH	1024
#define ABUSE_MAX_IO_BYTES	(1U << 20)

/* struct abuse_setup.flags (also reported in struct abuse_status.flags). */
#define ABUSE_FLAG_READ_ONLY	(1U << 0) /* the block layer refuses writes */
#define ABUSE_FLAG_RECONNECT	(1U << 1) /* take over a set-up device whose server went away */
/* server handles ABUSE_OP_FLUSH: the device has a write cache */
#define ABUSE_FLAG_FLUSH	(1U << 2)
#define ABUSE_FLAG_FUA		(1U << 3) /* server honours ABUSE_REQ_FUA on writes */
#define ABUSE_FLAG_DISCARD	(1U << 4) /* server handles ABUSE_OP_DISCARD */
#define ABUSE_FLAG_WRITE_ZEROES	(1U << 5) /* server handles ABUSE_OP_WRITE_ZEROES */
#define ABUSE_SETUP_FLAGS	0x3fU	  /* every flag above */

/*
 * struct abuse_setup.features: optional parts of the protocol, negotiated. Unlike the flags
 * (which describe the device, and an unknown one is refused), an unknown feature bit is not an
 * error: the module masks it off and the server sees it was not granted.
 */
/* completions may give read data as extents (ABUSE_CPL_EXTENTS) */
#define ABUSE_FEAT_EXTENTS	(1ULL << 0)
/*
 * several hardware queues (abuse_setup.nr_queues), each fetched from and answered on by its own
 * ABUSE_XFER calls (abuse_xfer.queue), so server threads do not share one queue. A server asks
 * for it only if ABUSE_STATUS lists it in abuse_status.features: a module without it refuses a
 * non-zero nr_queues (reserved space there).
 */
#define ABUSE_FEAT_QUEUES	(1ULL << 1)
#define ABUSE_FEATURES		0x3ULL	    /* every feature this header knows */

/* Most hardware queues a device has. */
#define ABUSE_MAX_QUEUES	32

struct abuse_setup {
	__u32 version;			/* ABUSE_ABI_VERSION */
	__u32 flags;			/* ABUSE_FLAG_* */
	__u64 size;			/* device size in bytes, a multiple of block_size */
	__u32 block_size;		/* logical block size: 512 or 4096 */
	__u32 queue_depth;		/* requests in flight at once, 1..ABUSE_MAX_QUEUE_DEPTH */
	__u32 max_io_bytes;		/* largest request: 4096..ABUSE_MAX_IO_BYTES, 4K multiple */
	__u32 reconnect_timeout_ms;	/* 0: the module parameter reconnect_timeout_ms */
	__u64 features;			/* in: ABUSE_FEAT_* wanted; out: those granted */
	/*
	 * With ABUSE_FEAT_QUEUES: in, the hardware queues wanted (0: one per CPU), at most
	 * ABUSE_MAX_QUEUES; out, the number the device has (fewer where there are fewer CPUs; a
	 * reconnecting server is given the device's). Without it: zero, and the device has one.
	 */
	__u32 nr_queues;
	__u32 reserved0;		/* must be zero */
	__u64 reserved[2];		/* must be zero */
};

/* struct abuse_request.op */
#define ABUSE_OP_READ		0
#define ABUSE_OP_WRITE		1
#define ABUSE_OP_FLUSH		2
#define ABUSE_OP_DISCARD	3
#define ABUSE_OP_WRITE_ZEROES	4

/* struct abuse_request.flags */
#define ABUSE_REQ_FUA		(1U << 0) /* make this write durable before answering */
#define ABUSE_REQ_NOUNMAP	(1U << 1) /* write-zeroes: keep the range allocated */

/* One block request, handed to the server by ABUSE_XFER. */
struct abuse_request {
	__u64 offset;			/* byte offset on the device */
	__u32 length;			/* bytes (0 for a flush) */
	__u16 op;			/* ABUSE_OP_* */
	__u16 flags;			/* ABUSE_REQ_* */
	__u32 tag;			/* echo in the completion */
	__u32 gen;			/* echo in the completion */
	__u64 data;			/* ABUSE_OP_WRITE: the payload's address in the data area */
	__u64 reserved[2];		/* zero */
};

/* struct abuse_completion.flags */
#define ABUSE_CPL_EXTENTS	(1U << 0) /* read: data points to n_extents struct abuse_extent */
#define ABUSE_CPL_FLAGS		0x1U	  /* every flag above */

/* Most extents one completion may give. */
#define ABUSE_MAX_EXTENTS	256

/*
 * The server's answer to one request. A successful read gives its data either as a buffer
 * (data: address of the length bytes read) or, with ABUSE_CPL_EXTENTS, as where the data lives:
 * data points to n_extents extents whose lengths add up to the request's length, and the
 * kernel reads them into the request itself (one copy fewer); only if ABUSE_FEAT_EXTENTS was
 * granted.
 */
struct abuse_completion {
	__u32 tag;			/* from the request */
	__u32 gen;			/* from the request */
	__s32 result;			/* 0, or a negative errno */
	__u16 flags;			/* ABUSE_CPL_* */
	__u16 n_extents;		/* with ABUSE_CPL_EXTENTS: 1..ABUSE_MAX_EXTENTS, else 0 */
	__u64 data;			/* ABUSE_OP_READ with result 0: see above */
	__u64 reserved[2];		/* must be zero */
};

/* struct abuse_extent.fd for a run of zeros. */
#define ABUSE_EXTENT_ZERO	(-1)

/* One piece of a read answered with ABUSE_CPL_EXTENTS. */
struct abuse_extent {
	__u64 offset;			/* byte offset in the file */
	__u32 length;			/* bytes, at least 1 */
	__s32 fd;			/* a file the server has open, or ABUSE_EXTENT_ZERO */
};

/* struct abuse_xfer.flags */
#define ABUSE_XFER_WAIT		(1U << 0) /* sleep (interruptibly) until a request can be fetched */

/*
 * One call: first answers n_completions requests, in order (the first stale, forged or
 * duplicate completion stops the call with EINVAL, n_completed says how many were taken), then
 * fetches up to max_requests requests. Write payloads are copied into the data area one after
 * another; a write that does not fit waits for the next call.
 */
struct abuse_xfer {
	__u64 completions;		/* address of struct abuse_completion[n_completions] */
	__u64 requests;			/* address of struct abuse_request[max_requests] */
	__u64 data;			/* address of the data area for write payloads */
	__u64 data_len;			/* its size: at least max_io_bytes when max_requests > 0 */
	__u32 n_completions;		/* in */
	__u32 max_requests;		/* in: 0 to only complete */
	__u32 flags;			/* in: ABUSE_XFER_* */
	__u32 n_requests;		/* out: requests fetched */
	__u32 n_completed;		/* out: completions accepted */
	/* in: the hardware queue this call answers and fetches on, below the device's nr_queues
	 * (0 without ABUSE_FEAT_QUEUES); completions name requests of this queue only
	 */
	__u32 queue;
	__u32 reserved[2];		/* must be zero */
};

/* struct abuse_status.state */
#define ABUSE_STATE_FREE	0 /* no block device: ready for ABUSE_SETUP */
#define ABUSE_STATE_SERVING	1 /* a server is attached */
#define ABUSE_STATE_WAITING	2 /* the server went away; waiting for one to reconnect */
#define ABUSE_STATE_DEAD	3 /* no server came within the timeout: I/O fails with EIO */

struct abuse_status {
	__u32 version;			/* ABUSE_ABI_VERSION of the module */
	__u32 index;			/* N of /dev/abctlN and /dev/abuseN */
	__u32 state;			/* ABUSE_STATE_* */
	__u32 flags;			/* ABUSE_FLAG_* given at setup */
	__u64 size;			/* bytes */
	__u32 block_size;
	__u32 queue_depth;
	__u32 max_io_bytes;
	__u32 reconnect_timeout_ms;
	__u32 pending;			/* requests waiting to be fetched */
	__u32 in_flight;		/* requests fetched and not yet answered */
	__u64 completed;		/* requests answered since setup */
	__u64 errors;			/* requests ended with an error since setup */
	__s32 server_pid;		/* pid (tgid) of the attached server, 0 if none */
	__u32 openers;			/* opens of the block device */
	__u64 features;			/* ABUSE_FEAT_* this module has (0 before ABUSE_FEAT_QUEUES) */
	__u32 nr_queues;		/* hardware queues of the device (0 while free) */
	__u32 reserved0;
	__u64 reserved[2];
};

#define ABUSE_IOCTL_MAGIC	0xAB
/* ABUSE_SETUP writes the granted features back */
#define ABUSE_SETUP		_IOWR(ABUSE_IOCTL_MAGIC, 0, struct abuse_setup)
#define ABUSE_XFER		_IOWR(ABUSE_IOCTL_MAGIC, 1, struct abuse_xfer)
#define ABUSE_STATUS		_IOR(ABUSE_IOCTL_MAGIC, 2, struct abuse_status)
#define ABUSE_RESET		_IO(ABUSE_IOCTL_MAGIC, 3)

/*
 * On /dev/abuse-control (as LOOP_CTL_*; the argument is the index itself, not a pointer).
 * GET_FREE returns the index of a free device, reserved for the calling file until it is closed
 * (so two servers asking at once get different ones); when none is free it creates one (-ENODEV
 * only when the minor space is full, or from a module older than these ioctls, which answers
 * ADD and REMOVE with -ENOTTY). A device GET_FREE created is removed again once it is free and
 * no file has its /dev/abctlN open; those created at load (module parameter max_abuse) or by
 * ADD stay until REMOVE.
 * ADD creates device N (or, with -1, the lowest free index) and returns its index: -EEXIST if
 * it exists, -EINVAL past the minor space. REMOVE removes device N: -ENODEV if there is none,
 * -EBUSY while it is set up, reserved or its /dev/abctlN is open.
 */
#define ABUSE_CTL_GET_FREE	_IO(ABUSE_IOCTL_MAGIC, 0x80)
#define ABUSE_CTL_ADD		_IO(ABUSE_IOCTL_MAGIC, 0x81)
#define ABUSE_CTL_REMOVE	_IO(ABUSE_IOCTL_MAGIC, 0x82)

#endif /* _UAPI_LINUX_ABUSE_H */
