// SPDX-License-Identifier: GPL-2.0
/*
 * locktrace test module: a real ABBA deadlock. Two ioctls take the same two mutexes in
 * opposite orders with a sleep in between; called from two threads at once they deadlock
 * for good (mutex_lock is uninterruptible). A third ioctl then blocks on one of the two
 * locks: blocked behind the deadlock, not part of it. The module can never be unloaded
 * after that; the VM is powered off instead.
 */
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>

#include "lt_deadlock.h"

struct lt_bank {
	struct mutex ledger_lock;
	struct mutex audit_lock;
	unsigned long transfers;
};

static struct lt_bank lt_bank;

static noinline void lt_ledger_then_audit(struct lt_bank *bank)
{
	mutex_lock(&bank->ledger_lock);
	msleep(500);
	mutex_lock(&bank->audit_lock);
	bank->transfers++;
	mutex_unlock(&bank->audit_lock);
	mutex_unlock(&bank->ledger_lock);
}

static noinline void lt_audit_then_ledger(struct lt_bank *bank)
{
	mutex_lock(&bank->audit_lock);
	msleep(500);
	mutex_lock(&bank->ledger_lock);
	bank->transfers++;
	mutex_unlock(&bank->ledger_lock);
	mutex_unlock(&bank->audit_lock);
}

static noinline void lt_ledger_only(struct lt_bank *bank)
{
	mutex_lock(&bank->ledger_lock);
	bank->transfers++;
	mutex_unlock(&bank->ledger_lock);
}

static long lt_deadlock_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case LT_DEADLOCK_LEDGER_THEN_AUDIT:
		lt_ledger_then_audit(&lt_bank);
		return 0;
	case LT_DEADLOCK_AUDIT_THEN_LEDGER:
		lt_audit_then_ledger(&lt_bank);
		return 0;
	case LT_DEADLOCK_LEDGER:
		lt_ledger_only(&lt_bank);
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lt_deadlock_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = lt_deadlock_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice lt_deadlock_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_deadlock",
	.fops = &lt_deadlock_fops,
	.mode = 0666,
};

static int __init lt_deadlock_init(void)
{
	struct lt_bank *bank = &lt_bank;

	/* Through a pointer, so the class names read "&bank->ledger_lock" as in a driver. */
	mutex_init(&bank->ledger_lock);
	mutex_init(&bank->audit_lock);
	return misc_register(&lt_deadlock_dev);
}

static void __exit lt_deadlock_exit(void)
{
	misc_deregister(&lt_deadlock_dev);
}

module_init(lt_deadlock_init);
module_exit(lt_deadlock_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("locktrace test: a real ABBA deadlock with a task blocked behind it");
