// SPDX-License-Identifier: GPL-2.0
/* blk_mq_ops.init_request's last parameter (numa_node) is int, not unsigned int: upstream
 * "blk-mq: nvme: Fix general protection fault in nvme_setup_descriptor_pools()" (Debian 7.2
 * and 7.3 have it; a stable backport may bring it to older series).
 */
#include <linux/blk-mq.h>

static int probe_init_request(struct blk_mq_tag_set *set, struct request *rq,
			      unsigned int hctx_idx, int numa_node)
{
	return 0;
}

const struct blk_mq_ops abuse_probe_ops;
const struct blk_mq_ops abuse_probe_ops = { .init_request = probe_init_request };
