// SPDX-License-Identifier: GPL-2.0
/*
 * lt_sem: exercises the lockdep semantics locktrace must reproduce, one ioctl per case
 * (see ../expect for the exact dependencies each one creates):
 * trylock success (held, but no dependency into it) and failure (not held afterwards),
 * a mutex_lock_interruptible() failed by a signal (the dependency into it exists, created at
 * the attempt; nothing depends on it afterwards), an out-of-order unlock, and rwsem
 * read/write, downgrade_write() and down_read_trylock().
 * Every lock is initialised with mutex_init()/init_rwsem() on a `struct lt_sem *s`, so the
 * lockdep-style class names are "&s->NAME". No allocation or printk under a lock.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/wait.h>

#include "lt_sem.h"

struct lt_sem {
	struct mutex outer, try_ok, after_try;
	struct mutex fail_holder, after_fail;
	struct mutex o1, o2, o3;
	struct rw_semaphore rw, rw2, rw3;
	struct mutex after_read, before_write, before_read, after_downgrade, after_rtry;
	struct mutex intr_outer, intr, after_intr;
};

static struct lt_sem lt_sem_state;
static DECLARE_WAIT_QUEUE_HEAD(lt_release_wq);
static int lt_release;
static int lt_intr_held;

static void lt_sem_init(struct lt_sem *s)
{
	mutex_init(&s->outer);
	mutex_init(&s->try_ok);
	mutex_init(&s->after_try);
	mutex_init(&s->fail_holder);
	mutex_init(&s->after_fail);
	mutex_init(&s->o1);
	mutex_init(&s->o2);
	mutex_init(&s->o3);
	init_rwsem(&s->rw);
	init_rwsem(&s->rw2);
	init_rwsem(&s->rw3);
	mutex_init(&s->after_read);
	mutex_init(&s->before_write);
	mutex_init(&s->before_read);
	mutex_init(&s->after_downgrade);
	mutex_init(&s->after_rtry);
	mutex_init(&s->intr_outer);
	mutex_init(&s->intr);
	mutex_init(&s->after_intr);
}

static noinline long lt_try_ok(struct lt_sem *s)
{
	int got;

	mutex_lock(&s->outer);
	got = mutex_trylock(&s->try_ok);
	mutex_lock(&s->after_try);
	mutex_unlock(&s->after_try);
	if (got)
		mutex_unlock(&s->try_ok);
	mutex_unlock(&s->outer);
	return got ? 0 : -EBUSY;
}

static noinline long lt_try_fail(struct lt_sem *s)
{
	int got;

	mutex_lock(&s->fail_holder);
	got = mutex_trylock(&s->fail_holder); /* held by us: fails */
	mutex_lock(&s->after_fail);
	mutex_unlock(&s->after_fail);
	if (got)
		mutex_unlock(&s->fail_holder);
	mutex_unlock(&s->fail_holder);
	return got ? -EBUSY : 0;
}

static noinline long lt_out_of_order(struct lt_sem *s)
{
	mutex_lock(&s->o1);
	mutex_lock(&s->o2);
	mutex_unlock(&s->o1);
	mutex_lock(&s->o3);
	mutex_unlock(&s->o3);
	mutex_unlock(&s->o2);
	return 0;
}

static noinline long lt_rwsem(struct lt_sem *s)
{
	/* rw held for read -> after_read */
	down_read(&s->rw);
	mutex_lock(&s->after_read);
	mutex_unlock(&s->after_read);
	up_read(&s->rw);
	/* before_write -> rw (write) */
	mutex_lock(&s->before_write);
	down_write(&s->rw);
	up_write(&s->rw);
	mutex_unlock(&s->before_write);
	/* before_read -> rw (read) */
	mutex_lock(&s->before_read);
	down_read(&s->rw);
	up_read(&s->rw);
	mutex_unlock(&s->before_read);
	/* rw2 taken for write, downgraded: held for read -> after_downgrade */
	down_write(&s->rw2);
	downgrade_write(&s->rw2);
	mutex_lock(&s->after_downgrade);
	mutex_unlock(&s->after_downgrade);
	up_read(&s->rw2);
	/* read trylock success: rw3 held for read -> after_rtry */
	if (!down_read_trylock(&s->rw3))
		return -EBUSY;
	mutex_lock(&s->after_rtry);
	mutex_unlock(&s->after_rtry);
	up_read(&s->rw3);
	return 0;
}

static noinline long lt_hold_intr(struct lt_sem *s)
{
	mutex_lock(&s->intr);
	WRITE_ONCE(lt_intr_held, 1);
	wait_event(lt_release_wq, READ_ONCE(lt_release));
	WRITE_ONCE(lt_intr_held, 0);
	mutex_unlock(&s->intr);
	return 0;
}

static noinline long lt_intr_fail(struct lt_sem *s)
{
	int ret;

	mutex_lock(&s->intr_outer);
	ret = mutex_lock_interruptible(&s->intr); /* blocks until the workload signals us */
	if (!ret)
		mutex_unlock(&s->intr);
	mutex_lock(&s->after_intr);
	mutex_unlock(&s->after_intr);
	mutex_unlock(&s->intr_outer);
	return ret ? -EINTR : -EAGAIN;
}

static long lt_sem_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct lt_sem *s = &lt_sem_state;

	switch (cmd) {
	case LT_SEM_TRY_OK:
		return lt_try_ok(s);
	case LT_SEM_TRY_FAIL:
		return lt_try_fail(s);
	case LT_SEM_OUT_OF_ORDER:
		return lt_out_of_order(s);
	case LT_SEM_RWSEM:
		return lt_rwsem(s);
	case LT_SEM_HOLD_INTR:
		return lt_hold_intr(s);
	case LT_SEM_INTR_FAIL:
		return lt_intr_fail(s);
	case LT_SEM_RELEASE_INTR:
		WRITE_ONCE(lt_release, 1);
		wake_up(&lt_release_wq);
		return 0;
	case LT_SEM_INTR_HELD:
		return READ_ONCE(lt_intr_held);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lt_sem_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = lt_sem_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice lt_sem_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_sem",
	.fops = &lt_sem_fops,
	.mode = 0666,
};

static int __init lt_sem_module_init(void)
{
	lt_sem_init(&lt_sem_state);
	return misc_register(&lt_sem_dev);
}

static void __exit lt_sem_module_exit(void)
{
	misc_deregister(&lt_sem_dev);
}

module_init(lt_sem_module_init);
module_exit(lt_sem_module_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("locktrace test: lockdep semantics (trylock, interruptible, out-of-order, rwsem)");
