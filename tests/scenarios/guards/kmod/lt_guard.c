// SPDX-License-Identifier: GPL-2.0
/*
 * lt_guard: what serialises a lock-order inversion and what does not, and allocations whose
 * reclaim cannot enter the filesystem but may still invalidate (see ../expect):
 *
 * - &inst_a/&inst_b in both orders, each under its own instance of one class
 *   (&objs[i].lock: one mutex_init call site, two objects): nothing serialises them;
 * - &read_a/&read_b in both orders under &read_gate held for read: readers run together;
 * - &mutex_a/&mutex_b in both orders under the one &global_gate mutex: guarded;
 * - &wsem_a/&wsem_b in both orders under &write_gate held for write: guarded;
 * - &nofs_lock held across kmalloc(GFP_NOFS), &noio_lock across kmalloc(GFP_KERNEL) in a
 *   memalloc_noio scope, each taken again by an mmu_notifier callback: lockdep's
 *   fs_reclaim_acquire() takes the invalidate map for every allocation that may reclaim,
 *   so both close a cycle through mmu_notifier_invalidate_range_start.
 *
 * Nothing deadlocks: one task runs every case.
 */
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "lt_guard.h"

struct lt_obj {
	struct mutex lock;
};

static struct lt_obj objs[2];
static struct rw_semaphore read_gate, write_gate;
static struct mutex global_gate;
static struct mutex inst_a, inst_b, read_a, read_b, mutex_a, mutex_b, wsem_a, wsem_b;
static struct mutex nofs_lock, noio_lock;
static atomic_t callbacks;

struct lt_client {
	struct mmu_notifier notifier;
	bool registered;
};

static noinline void lt_abba(struct mutex *first, struct mutex *second)
{
	mutex_lock(first);
	mutex_lock(second);
	mutex_unlock(second);
	mutex_unlock(first);
}

static noinline void lt_under_mutex(struct mutex *gate, struct mutex *first, struct mutex *second)
{
	mutex_lock(gate);
	lt_abba(first, second);
	mutex_unlock(gate);
}

static noinline void lt_under_read(struct rw_semaphore *gate, struct mutex *first,
				   struct mutex *second)
{
	down_read(gate);
	lt_abba(first, second);
	up_read(gate);
}

static noinline void lt_under_write(struct rw_semaphore *gate, struct mutex *first,
				    struct mutex *second)
{
	down_write(gate);
	lt_abba(first, second);
	up_write(gate);
}

static noinline int lt_nofs_alloc(void)
{
	void *p;

	mutex_lock(&nofs_lock);
	p = kmalloc(64, GFP_NOFS);
	kfree(p);
	mutex_unlock(&nofs_lock);
	return p ? 0 : -ENOMEM;
}

static noinline int lt_noio_alloc(void)
{
	unsigned int scope;
	void *p;

	mutex_lock(&noio_lock);
	scope = memalloc_noio_save();
	p = kmalloc(64, GFP_KERNEL);
	memalloc_noio_restore(scope);
	kfree(p);
	mutex_unlock(&noio_lock);
	return p ? 0 : -ENOMEM;
}

static noinline int lt_invalidate_range_start(struct mmu_notifier *mn,
					      const struct mmu_notifier_range *range)
{
	if (!mmu_notifier_range_blockable(range))
		return -EAGAIN;
	mutex_lock(&nofs_lock);
	mutex_unlock(&nofs_lock);
	mutex_lock(&noio_lock);
	mutex_unlock(&noio_lock);
	atomic_inc(&callbacks);
	return 0;
}

static const struct mmu_notifier_ops lt_mn_ops = {
	.invalidate_range_start = lt_invalidate_range_start,
};

static int lt_guard_open(struct inode *inode, struct file *file)
{
	struct lt_client *client = kzalloc(sizeof(*client), GFP_KERNEL);

	if (!client)
		return -ENOMEM;
	client->notifier.ops = &lt_mn_ops;
	file->private_data = client;
	return 0;
}

static int lt_guard_release(struct inode *inode, struct file *file)
{
	struct lt_client *client = file->private_data;

	/* Synchronous: no callback runs after this; drops the mm reference. */
	if (client->registered)
		mmu_notifier_unregister(&client->notifier, client->notifier.mm);
	kfree(client);
	return 0;
}

static long lt_guard_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct lt_client *client = file->private_data;
	int ret;

	switch (cmd) {
	case LT_GUARD_INSTANCE_AB:
		lt_under_mutex(&objs[0].lock, &inst_a, &inst_b);
		return 0;
	case LT_GUARD_INSTANCE_BA:
		lt_under_mutex(&objs[1].lock, &inst_b, &inst_a);
		return 0;
	case LT_GUARD_READ_AB:
		lt_under_read(&read_gate, &read_a, &read_b);
		return 0;
	case LT_GUARD_READ_BA:
		lt_under_read(&read_gate, &read_b, &read_a);
		return 0;
	case LT_GUARD_MUTEX_AB:
		lt_under_mutex(&global_gate, &mutex_a, &mutex_b);
		return 0;
	case LT_GUARD_MUTEX_BA:
		lt_under_mutex(&global_gate, &mutex_b, &mutex_a);
		return 0;
	case LT_GUARD_WSEM_AB:
		lt_under_write(&write_gate, &wsem_a, &wsem_b);
		return 0;
	case LT_GUARD_WSEM_BA:
		lt_under_write(&write_gate, &wsem_b, &wsem_a);
		return 0;
	case LT_GUARD_REGISTER:
		if (client->registered || !current->mm)
			return -EINVAL;
		ret = mmu_notifier_register(&client->notifier, current->mm);
		if (ret == 0)
			client->registered = true;
		return ret;
	case LT_GUARD_NOFS_ALLOC:
		return lt_nofs_alloc();
	case LT_GUARD_NOIO_ALLOC:
		return lt_noio_alloc();
	case LT_GUARD_CALLBACKS:
		return atomic_read(&callbacks);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lt_guard_fops = {
	.owner = THIS_MODULE,
	.open = lt_guard_open,
	.release = lt_guard_release,
	.unlocked_ioctl = lt_guard_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice lt_guard_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_guard",
	.fops = &lt_guard_fops,
	.mode = 0666,
};

static int __init lt_guard_init(void)
{
	int i;

	/* One init site, so one class (&objs[i].lock), two instances. */
	for (i = 0; i < ARRAY_SIZE(objs); i++)
		mutex_init(&objs[i].lock);
	init_rwsem(&read_gate);
	init_rwsem(&write_gate);
	mutex_init(&global_gate);
	mutex_init(&inst_a);
	mutex_init(&inst_b);
	mutex_init(&read_a);
	mutex_init(&read_b);
	mutex_init(&mutex_a);
	mutex_init(&mutex_b);
	mutex_init(&wsem_a);
	mutex_init(&wsem_b);
	mutex_init(&nofs_lock);
	mutex_init(&noio_lock);
	return misc_register(&lt_guard_dev);
}

static void __exit lt_guard_exit(void)
{
	misc_deregister(&lt_guard_dev);
}

module_init(lt_guard_init);
module_exit(lt_guard_exit);

MODULE_LICENSE("GPL");	/* mmu_notifier_register() is EXPORT_SYMBOL_GPL */
MODULE_DESCRIPTION("locktrace test: guards that serialise and guards that do not; NOFS/NOIO allocations");
