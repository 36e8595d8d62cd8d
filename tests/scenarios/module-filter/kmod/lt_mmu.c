// SPDX-License-Identifier: GPL-2.0
/*
 * lt_mmu: the nouveau SVM deadlock of the fixture (nouveau-lockdep-splat.txt) in miniature.
 *   - the notifier's invalidate_range_start() takes &svmm->mutex
 *     (mmu_notifier_invalidate_range_start -> &svmm->mutex, on munmap);
 *   - mmu_notifier_register() primes fs_reclaim -> mmu_notifier_invalidate_range_start;
 *   - an allocation that may reclaim (GFP_KERNEL) is made under &svmm->mutex
 *     (&svmm->mutex -> fs_reclaim).
 * Together: &svmm->mutex -> fs_reclaim -> mmu_notifier_invalidate_range_start -> &svmm->mutex.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "lt_mmu.h"

struct lt_svmm {
	struct mutex mutex;
	struct mmu_notifier notifier;
	struct mm_struct *mm;
};

static struct lt_svmm *lt_svmm;

static int lt_invalidate_range_start(struct mmu_notifier *mn,
				     const struct mmu_notifier_range *range)
{
	struct lt_svmm *svmm = container_of(mn, struct lt_svmm, notifier);

	if (!mmu_notifier_range_blockable(range))
		return -EAGAIN;
	mutex_lock(&svmm->mutex);
	mutex_unlock(&svmm->mutex);
	return 0;
}

static const struct mmu_notifier_ops lt_mmu_ops = {
	.invalidate_range_start = lt_invalidate_range_start,
};

static long lt_mmu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct lt_svmm *svmm = lt_svmm;
	void *p;
	int ret;

	switch (cmd) {
	case LT_MMU_REGISTER:
		if (svmm)
			return -EBUSY;
		svmm = kzalloc(sizeof(*svmm), GFP_KERNEL);
		if (!svmm)
			return -ENOMEM;
		mutex_init(&svmm->mutex);
		svmm->notifier.ops = &lt_mmu_ops;
		svmm->mm = current->mm;
		ret = mmu_notifier_register(&svmm->notifier, current->mm);
		if (ret) {
			kfree(svmm);
			return ret;
		}
		lt_svmm = svmm;
		return 0;
	case LT_MMU_ALLOC:
		if (!svmm)
			return -ENOENT;
		mutex_lock(&svmm->mutex);
		p = kmalloc(128, GFP_KERNEL);
		kfree(p);
		mutex_unlock(&svmm->mutex);
		return 0;
	case LT_MMU_UNREGISTER:
		if (!svmm)
			return -ENOENT;
		mmu_notifier_unregister(&svmm->notifier, svmm->mm);
		lt_svmm = NULL;
		kfree(svmm);
		return 0;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations lt_mmu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = lt_mmu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice lt_mmu_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_mmu",
	.fops = &lt_mmu_fops,
	.mode = 0666,
};

static int __init lt_mmu_init(void)
{
	return misc_register(&lt_mmu_dev);
}

static void __exit lt_mmu_exit(void)
{
	misc_deregister(&lt_mmu_dev);
}

module_init(lt_mmu_init);
module_exit(lt_mmu_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("locktrace test: mmu_notifier / fs_reclaim pseudo-lock cycle (nouveau SVM shape)");
