// SPDX-License-Identifier: GPL-2.0
/*
 * abuse: A Block device in User SpacE. A modern port of the 2009 ABUSE design (stateless
 * fetch/answer, a server may reconnect) with dm-user's op set and request ownership.
 *
 * This file: module parameters, the index of devices, the control char devices /dev/abctlN (one
 * per device) and /dev/abuse-control (finds a free device, adds and removes devices, as
 * loop-control does), and ioctl dispatch.
 */
#include <linux/cdev.h>
#include <linux/compat.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "abuse_compat.h"
#include "abuse_dev.h"

static unsigned int max_abuse = 8;
module_param(max_abuse, uint, 0444);
MODULE_PARM_DESC(max_abuse,
		 "Devices /dev/abuseN created at load (default 8); more are created on demand");

static unsigned int max_part = 15;
module_param(max_part, uint, 0444);
MODULE_PARM_DESC(max_part, "Partitions per device, rounded up to 2^n - 1 (0-255, default 15)");

unsigned int abuse_reconnect_timeout_ms = 30000;
module_param_named(reconnect_timeout_ms, abuse_reconnect_timeout_ms, uint, 0644);
MODULE_PARM_DESC(reconnect_timeout_ms,
		 "How long a device whose server went away waits for a new one before failing I/O (default 30000)");

int abuse_major;
int abuse_part_shift;
static unsigned int abuse_max_devices;	/* the minor space: indexes 0 .. this - 1 */
static dev_t abctl_devt;
static struct cdev abctl_cdev;
static struct class *abuse_class;
/* Every device by index; with each device's ctl_openers and on_demand, under the mutex. */
static DEFINE_IDR(abuse_index_idr);
static DEFINE_MUTEX(abuse_ctl_mutex);

/* Creates device `index` (or the lowest free index, for -1) with its /dev/abctlN. */
static struct abuse_dev *abuse_add(int index, bool on_demand)
{
	struct abuse_dev *ad;
	struct device *dev;
	int err;

	lockdep_assert_held(&abuse_ctl_mutex);
	if (index >= (int)abuse_max_devices)
		return ERR_PTR(-EINVAL);
	ad = kzalloc(sizeof(*ad), GFP_KERNEL);
	if (!ad)
		return ERR_PTR(-ENOMEM);
	if (index >= 0) {
		err = idr_alloc(&abuse_index_idr, ad, index, index + 1, GFP_KERNEL);
		if (err == -ENOSPC)
			err = -EEXIST;
	} else {
		err = idr_alloc(&abuse_index_idr, ad, 0, abuse_max_devices, GFP_KERNEL);
		if (err == -ENOSPC)
			err = -ENODEV;	/* the minor space is full */
	}
	if (err < 0)
		goto free;
	abuse_dev_init(ad, err);
	ad->on_demand = on_demand;
	dev = device_create(abuse_class, NULL, MKDEV(MAJOR(abctl_devt), ad->index), NULL,
			    "abctl%d", ad->index);
	if (IS_ERR(dev)) {
		err = PTR_ERR(dev);
		idr_remove(&abuse_index_idr, ad->index);
		goto free;
	}
	return ad;
free:
	kfree(ad);
	return ERR_PTR(err);
}

/* Removes a device that is free (no disk, not reserved) and whose control device is closed. */
static void abuse_remove(struct abuse_dev *ad)
{
	lockdep_assert_held(&abuse_ctl_mutex);
	idr_remove(&abuse_index_idr, ad->index);
	device_destroy(abuse_class, MKDEV(MAJOR(abctl_devt), ad->index));
	kfree(ad);
}

/* Free, closed and not promised to anyone: nothing can reach it but through the index. */
static bool abuse_unused(struct abuse_dev *ad)
{
	bool unused;

	lockdep_assert_held(&abuse_ctl_mutex);
	if (ad->ctl_openers)
		return false;
	mutex_lock(&ad->lock);
	unused = ad->state == ABUSE_STATE_FREE;
	mutex_unlock(&ad->lock);
	return unused;
}

/* A device GET_FREE created goes away once nothing uses it. */
static void abuse_drop_if_unused(struct abuse_dev *ad)
{
	if (ad->on_demand && abuse_unused(ad))
		abuse_remove(ad);
}

static int abctl_open(struct inode *inode, struct file *file)
{
	struct abuse_dev *ad;

	mutex_lock(&abuse_ctl_mutex);
	ad = idr_find(&abuse_index_idr, iminor(inode));
	if (ad)
		ad->ctl_openers++;
	mutex_unlock(&abuse_ctl_mutex);
	if (!ad)
		return -ENXIO;
	file->private_data = ad;
	return nonseekable_open(inode, file);
}

static int abctl_release(struct inode *inode, struct file *file)
{
	struct abuse_dev *ad = file->private_data;

	abuse_server_gone(ad, file);
	mutex_lock(&abuse_ctl_mutex);
	ad->ctl_openers--;
	abuse_drop_if_unused(ad);
	mutex_unlock(&abuse_ctl_mutex);
	return 0;
}

static __poll_t abctl_poll(struct file *file, poll_table *wait)
{
	struct abuse_dev *ad = file->private_data;
	__poll_t mask = 0;
	unsigned int i;

	poll_wait(file, &ad->wait, wait);
	for (i = 0; i < READ_ONCE(ad->nr_queues); i++)
		if (!list_empty_careful(&ad->queues[i].pending))
			mask |= EPOLLIN | EPOLLRDNORM;
	spin_lock_irq(&ad->queue_lock);
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
		/* The queues the device has (checked writable by the put_user above). */
		if (!ret && (setup.features & ABUSE_FEAT_QUEUES) &&
		    put_user(setup.nr_queues, &((struct abuse_setup __user *)uarg)->nr_queues))
			return -EFAULT;
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

/* GET_FREE: the first free device, or a new one; reserved for `file` until it is closed. */
static long abuse_get_free(struct file *file)
{
	struct abuse_dev *ad;
	int id;

	idr_for_each_entry(&abuse_index_idr, ad, id)
		if (abuse_reserve(ad, file))
			return id;
	ad = abuse_add(-1, true);
	if (IS_ERR(ad))
		return PTR_ERR(ad);
	if (!abuse_reserve(ad, file))
		return -EBUSY;	/* cannot happen: nobody else sees it before the mutex is dropped */
	return ad->index;
}

static long abuse_ctl_remove(unsigned long arg)
{
	struct abuse_dev *ad = arg <= INT_MAX ? idr_find(&abuse_index_idr, arg) : NULL;

	if (!ad)
		return -ENODEV;
	if (!abuse_unused(ad))
		return -EBUSY;
	abuse_remove(ad);
	return 0;
}

static long abuse_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct abuse_dev *ad;
	long ret;

	mutex_lock(&abuse_ctl_mutex);
	switch (cmd) {
	case ABUSE_CTL_GET_FREE:
		ret = abuse_get_free(file);
		break;
	case ABUSE_CTL_ADD:
		/* The index, or -1 for any: anything else negative is refused. */
		if ((long)arg < -1 || (long)arg > INT_MAX) {
			ret = -EINVAL;
			break;
		}
		ad = abuse_add((long)arg, false);
		ret = IS_ERR(ad) ? PTR_ERR(ad) : ad->index;
		break;
	case ABUSE_CTL_REMOVE:
		ret = abuse_ctl_remove(arg);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&abuse_ctl_mutex);
	return ret;
}

static int abuse_control_release(struct inode *inode, struct file *file)
{
	struct abuse_dev *ad;
	int id;

	mutex_lock(&abuse_ctl_mutex);
	idr_for_each_entry(&abuse_index_idr, ad, id) {
		abuse_unreserve(ad, file);
		abuse_drop_if_unused(ad);	/* the next entry is looked up by index: safe */
	}
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

/* Module unload: nothing has a control or block device open (module refcount), so no server
 * is attached; remove the devices, also those that wait for a server.
 */
static void abuse_remove_all(void)
{
	struct abuse_dev *ad;
	int id;

	mutex_lock(&abuse_ctl_mutex);
	idr_for_each_entry(&abuse_index_idr, ad, id) {
		mutex_lock(&ad->lock);
		abuse_teardown(ad, true);
		mutex_unlock(&ad->lock);
		abuse_remove(ad);
	}
	mutex_unlock(&abuse_ctl_mutex);
	idr_destroy(&abuse_index_idr);
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
	BUILD_BUG_ON(ABUSE_FEATURES & ~(u64)(ABUSE_FEAT_EXTENTS | ABUSE_FEAT_QUEUES));	/* each handled */
}

static int __init abuse_init(void)
{
	unsigned int i;
	int err;

	abuse_check_uapi();

	if (max_part > 255)
		return -EINVAL;
	abuse_part_shift = max_part ? fls(max_part) : 0;
	abuse_max_devices = 1U << (MINORBITS - abuse_part_shift);
	if (max_abuse > abuse_max_devices)
		return -EINVAL;

	err = register_blkdev(0, "abuse");
	if (err < 0)
		return err;
	abuse_major = err;

	err = alloc_chrdev_region(&abctl_devt, 0, abuse_max_devices, "abctl");
	if (err)
		goto unregister_blkdev;
	cdev_init(&abctl_cdev, &abctl_fops);
	abctl_cdev.owner = THIS_MODULE;
	err = cdev_add(&abctl_cdev, abctl_devt, abuse_max_devices);
	if (err)
		goto unregister_chrdev;
	abuse_class = abuse_class_create("abuse");
	if (IS_ERR(abuse_class)) {
		err = PTR_ERR(abuse_class);
		goto del_cdev;
	}
	mutex_lock(&abuse_ctl_mutex);
	for (i = 0; i < max_abuse && !err; i++)
		err = PTR_ERR_OR_ZERO(abuse_add(i, false));
	mutex_unlock(&abuse_ctl_mutex);
	if (err)
		goto remove_devs;
	err = misc_register(&abuse_control);
	if (err)
		goto remove_devs;
	pr_info("abuse: %u devices (up to %u on demand), %u partitions each, ABI %u\n", max_abuse,
		abuse_max_devices, abuse_part_shift ? (1U << abuse_part_shift) - 1 : 0,
		ABUSE_ABI_VERSION);
	return 0;

remove_devs:
	abuse_remove_all();
	class_destroy(abuse_class);
del_cdev:
	cdev_del(&abctl_cdev);
unregister_chrdev:
	unregister_chrdev_region(abctl_devt, abuse_max_devices);
unregister_blkdev:
	unregister_blkdev(abuse_major, "abuse");
	return err;
}

static void __exit abuse_exit(void)
{
	misc_deregister(&abuse_control);
	abuse_remove_all();
	class_destroy(abuse_class);
	cdev_del(&abctl_cdev);
	unregister_chrdev_region(abctl_devt, abuse_max_devices);
	unregister_blkdev(abuse_major, "abuse");
}

module_init(abuse_init);
module_exit(abuse_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("abuse: block devices served from user space");
MODULE_AUTHOR("vdmount developers");
