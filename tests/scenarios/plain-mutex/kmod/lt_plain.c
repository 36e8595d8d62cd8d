// SPDX-License-Identifier: GPL-2.0
/*
 * lt_plain: a lock-order inversion visible only at class level.
 *
 * Two objects of the same type each carry two mutexes, a_lock and b_lock,
 * initialised with mutex_init() at module init (so their lockdep-style class
 * names are "&obj->a_lock" and "&obj->b_lock").  ioctl LT_PLAIN_AB takes
 * obj[0].a_lock then obj[0].b_lock; ioctl LT_PLAIN_BA takes obj[1].b_lock then
 * obj[1].a_lock.  No single pair of instances deadlocks, but the classes form
 * the cycle a_lock -> b_lock -> a_lock, which a lock-order tracer must report.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>

#include "lt_plain.h"

struct lt_obj {
	struct mutex a_lock;
	struct mutex b_lock;
	unsigned long counter;
};

static struct lt_obj lt_objs[2];

/*
 * noinline: one machine-code call site per mutex_init(), so that classes keyed by init call
 * site (plain-mutex-init-site, --class-by-init-site) are one per source site, as lockdep's
 * static keys are; inlined into an unrolled loop each copy would be a class of its own.
 */
static noinline void lt_obj_init(struct lt_obj *obj)
{
	mutex_init(&obj->a_lock);
	mutex_init(&obj->b_lock);
	obj->counter = 0;
}

static noinline void lt_lock_ab(struct lt_obj *obj)
{
	mutex_lock(&obj->a_lock);
	mutex_lock(&obj->b_lock);
	obj->counter++;
	mutex_unlock(&obj->b_lock);
	mutex_unlock(&obj->a_lock);
}

static noinline void lt_lock_ba(struct lt_obj *obj)
{
	mutex_lock(&obj->b_lock);
	mutex_lock(&obj->a_lock);
	obj->counter++;
	mutex_unlock(&obj->a_lock);
	mutex_unlock(&obj->b_lock);
}

static long lt_plain_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	switch (cmd) {
	case LT_PLAIN_AB:
		lt_lock_ab(&lt_objs[0]);
		return 0;
	case LT_PLAIN_BA:
		lt_lock_ba(&lt_objs[1]);
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lt_plain_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = lt_plain_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice lt_plain_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_plain",
	.fops = &lt_plain_fops,
	.mode = 0666,
};

static int __init lt_plain_init(void)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(lt_objs); i++)
		lt_obj_init(&lt_objs[i]);
	return misc_register(&lt_plain_dev);
}

static void __exit lt_plain_exit(void)
{
	misc_deregister(&lt_plain_dev);
}

module_init(lt_plain_init);
module_exit(lt_plain_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("locktrace test: class-level AB/BA mutex inversion");
