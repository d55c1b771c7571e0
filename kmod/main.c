// SPDX-License-Identifier: GPL-2.0
/*
 * abuse: A Block device in User SpacE. A modern port of the 2009 ABUSE design (stateless
 * fetch/answer, a server may reconnect) with dm-user's op set and request ownership.
 *
 * This file: module parameters, the control char devices /dev/abctlN (one per device) and
 * /dev/abuse-control (finds a free device), and ioctl dispatch.
 */
#include <linux/cdev.h>
#include <linux/compat.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "abuse_compat.h"
#include "abuse_dev.h"

static unsigned int max_abuse = 8;
module_param(max_abuse, uint, 0444);
MODULE_PARM_DESC(max_abuse, "Number of devices /dev/abuseN created at load (1-256, default 8)");

static unsigned int max_part = 15;
module_param(max_part, uint, 0444);
MODULE_PARM_DESC(max_part, "Partitions per device, rounded up to 2^n - 1 (0-255, default 15)");

unsigned int abuse_reconnect_timeout_ms = 30000;
module_param_named(reconnect_timeout_ms, abuse_reconnect_timeout_ms, uint, 0644);
MODULE_PARM_DESC(reconnect_timeout_ms,
		 "How long a device whose server went away waits for a new one before failing I/O (default 30000)");

int abuse_major;
int abuse_part_shift;
static dev_t abctl_devt;
static struct cdev abctl_cdev;
static struct class *abuse_class;
static struct abuse_dev *abuse_devs;
static DEFINE_MUTEX(abuse_ctl_mutex);	/* serialises GET_FREE and releasing its reservations */

static int abctl_open(struct inode *inode, struct file *file)
{
	unsigned int n = iminor(inode);

	if (n >= max_abuse)
		return -ENXIO;
	file->private_data = &abuse_devs[n];
	return nonseekable_open(inode, file);
}

static int abctl_release(struct inode *inode, struct file *file)
{
	abuse_server_gone(file->private_data, file);
	return 0;
}

static __poll_t abctl_poll(struct file *file, poll_table *wait)
{
	struct abuse_dev *ad = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &ad->wait, wait);
	spin_lock_irq(&ad->queue_lock);
	if (!list_empty(&ad->pending))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (ad->server != file && ad->disk)
		mask |= EPOLLHUP;	/* served by someone else, or reset */
	spin_unlock_irq(&ad->queue_lock);
	return mask;
}

static long abctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct abuse_dev *ad = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct abuse_setup setup;
	struct abuse_status status;
	long ret;

	switch (cmd) {
	case ABUSE_SETUP:
		if (copy_from_user(&setup, uarg, sizeof(setup)))
			return -EFAULT;
		/* An unknown feature is not an error: the server reads back what it was granted.
		 * Written before the setup, so a failed write leaves no device behind.
		 */
		setup.features &= ABUSE_FEATURES;
		if (put_user(setup.features, &((struct abuse_setup __user *)uarg)->features))
			return -EFAULT;
		mutex_lock(&ad->lock);
		ret = abuse_setup(ad, file, &setup);
		mutex_unlock(&ad->lock);
		return ret;
	case ABUSE_XFER:
		return abuse_xfer(ad, file, uarg);
	case ABUSE_STATUS:
		abuse_fill_status(ad, &status);
		return copy_to_user(uarg, &status, sizeof(status)) ? -EFAULT : 0;
	case ABUSE_RESET:
		mutex_lock(&ad->lock);
		ret = abuse_teardown(ad, false);
		mutex_unlock(&ad->lock);
		return ret;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations abctl_fops = {
	.owner = THIS_MODULE,
	.open = abctl_open,
	.release = abctl_release,
	.poll = abctl_poll,
	.unlocked_ioctl = abctl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static long abuse_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	long ret = -ENODEV;
	unsigned int i;

	if (cmd != ABUSE_CTL_GET_FREE)
		return -ENOTTY;
	mutex_lock(&abuse_ctl_mutex);
	for (i = 0; i < max_abuse; i++) {
		if (abuse_reserve(&abuse_devs[i], file)) {
			ret = i;
			break;
		}
	}
	mutex_unlock(&abuse_ctl_mutex);
	return ret;
}

static int abuse_control_release(struct inode *inode, struct file *file)
{
	unsigned int i;

	mutex_lock(&abuse_ctl_mutex);
	for (i = 0; i < max_abuse; i++)
		abuse_unreserve(&abuse_devs[i], file);
	mutex_unlock(&abuse_ctl_mutex);
	return 0;
}

static const struct file_operations abuse_control_fops = {
	.owner = THIS_MODULE,
	.release = abuse_control_release,
	.unlocked_ioctl = abuse_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice abuse_control = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "abuse-control",
	.fops = &abuse_control_fops,
};

static void abuse_remove_ctl_devices(unsigned int n)
{
	while (n--)
		device_destroy(abuse_class, MKDEV(MAJOR(abctl_devt), n));
}

/* The ABI's sizes are fixed: a change here must be a deliberate change of the ABI (and of
 * src/abuse/uapi.rs, which asserts the same numbers).
 */
static void __init abuse_check_uapi(void)
{
	BUILD_BUG_ON(sizeof(struct abuse_setup) != 64);
	BUILD_BUG_ON(sizeof(struct abuse_request) != 48);
	BUILD_BUG_ON(sizeof(struct abuse_completion) != 40);
	BUILD_BUG_ON(sizeof(struct abuse_extent) != 16);
	BUILD_BUG_ON(sizeof(struct abuse_xfer) != 64);
	BUILD_BUG_ON(sizeof(struct abuse_status) != 104);
	BUILD_BUG_ON(ABUSE_FEATURES & ~(u64)ABUSE_FEAT_EXTENTS);	/* each one handled here */
}

static int __init abuse_init(void)
{
	unsigned int i;
	int err;

	abuse_check_uapi();

	if (!max_abuse || max_abuse > 256 || max_part > 255)
		return -EINVAL;
	abuse_part_shift = max_part ? fls(max_part) : 0;

	abuse_devs = kcalloc(max_abuse, sizeof(*abuse_devs), GFP_KERNEL);
	if (!abuse_devs)
		return -ENOMEM;
	for (i = 0; i < max_abuse; i++)
		abuse_dev_init(&abuse_devs[i], i);

	err = register_blkdev(0, "abuse");
	if (err < 0)
		goto free_devs;
	abuse_major = err;

	err = alloc_chrdev_region(&abctl_devt, 0, max_abuse, "abctl");
	if (err)
		goto unregister_blkdev;
	cdev_init(&abctl_cdev, &abctl_fops);
	abctl_cdev.owner = THIS_MODULE;
	err = cdev_add(&abctl_cdev, abctl_devt, max_abuse);
	if (err)
		goto unregister_chrdev;
	abuse_class = abuse_class_create("abuse");
	if (IS_ERR(abuse_class)) {
		err = PTR_ERR(abuse_class);
		goto del_cdev;
	}
	for (i = 0; i < max_abuse; i++) {
		struct device *dev = device_create(abuse_class, NULL, MKDEV(MAJOR(abctl_devt), i),
						   NULL, "abctl%u", i);
		if (IS_ERR(dev)) {
			err = PTR_ERR(dev);
			abuse_remove_ctl_devices(i);
			goto destroy_class;
		}
	}
	err = misc_register(&abuse_control);
	if (err)
		goto remove_ctl;
	pr_info("abuse: %u devices, %u partitions each, ABI %u\n", max_abuse,
		abuse_part_shift ? (1U << abuse_part_shift) - 1 : 0, ABUSE_ABI_VERSION);
	return 0;

remove_ctl:
	abuse_remove_ctl_devices(max_abuse);
destroy_class:
	class_destroy(abuse_class);
del_cdev:
	cdev_del(&abctl_cdev);
unregister_chrdev:
	unregister_chrdev_region(abctl_devt, max_abuse);
unregister_blkdev:
	unregister_blkdev(abuse_major, "abuse");
free_devs:
	kfree(abuse_devs);
	return err;
}

static void __exit abuse_exit(void)
{
	unsigned int i;

	/* Nothing has a control device or block device open (module refcount), so no server is
	 * attached; remove the devices that wait for one.
	 */
	misc_deregister(&abuse_control);
	for (i = 0; i < max_abuse; i++) {
		mutex_lock(&abuse_devs[i].lock);
		abuse_teardown(&abuse_devs[i], true);
		mutex_unlock(&abuse_devs[i].lock);
	}
	abuse_remove_ctl_devices(max_abuse);
	class_destroy(abuse_class);
	cdev_del(&abctl_cdev);
	unregister_chrdev_region(abctl_devt, max_abuse);
	unregister_blkdev(abuse_major, "abuse");
	kfree(abuse_devs);
}

module_init(abuse_init);
module_exit(abuse_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("abuse: block devices served from user space");
MODULE_AUTHOR("vdmount developers");
