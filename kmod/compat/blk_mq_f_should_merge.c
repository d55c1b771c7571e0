// SPDX-License-Identifier: GPL-2.0
/* BLK_MQ_F_SHOULD_MERGE still exists (an enum value, so #ifdef cannot tell): upstream removed
 * it, merging being the default, in "blk-mq: remove BLK_MQ_F_SHOULD_MERGE" (6.14).
 */
#include <linux/blk-mq.h>

unsigned int abuse_probe(void);
unsigned int abuse_probe(void)
{
	return BLK_MQ_F_SHOULD_MERGE;
}
