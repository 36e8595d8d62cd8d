// SPDX-License-Identifier: GPL-2.0
/*
 * nouveau_svmm: a model of nouveau's SVM locking (drivers/gpu/drm/nouveau/nouveau_svm.c and
 * nvkm/subdev/mmu/{uvmm,vmm}.c, v5.5), small enough to read in one sitting, reproducing the
 * lock-order inversion lockdep reported against v5.5-rc5:
 *
 *   &vmm->mutex --> fs_reclaim --> mmu_notifier_invalidate_range_start --> &svmm->mutex
 *        ^                                                                      |
 *        +----------------------------------------------------------------------+
 *
 * - nvkm_uvmm_mthd(NVIF_VMM_V0_GET) takes the device-wide vmm->mutex and, through
 *   nvkm_vmm_get_locked() -> nvkm_vma_tail(), allocates with GFP_KERNEL while holding it
 *   (&vmm->mutex -> fs_reclaim);
 * - nouveau_svmm_init() registers an mmu_notifier on current->mm with
 *   __mmu_notifier_register(), where lockdep records that notifier callbacks run under
 *   reclaim (fs_reclaim -> mmu_notifier_invalidate_range_start);
 * - the notifier, nouveau_svmm_invalidate_range_start(), takes svmm->mutex
 *   (mmu_notifier_invalidate_range_start -> &svmm->mutex) and then, through
 *   nouveau_svmm_invalidate() -> nvif_object_mthd() -> nvkm_uvmm_mthd(NVIF_VMM_V0_PFNCLR),
 *   vmm->mutex (&svmm->mutex -> &vmm->mutex).
 *
 * Nothing deadlocks when the workload runs (that would need direct reclaim to unmap pages of
 * the registered mm while the GET path holds vmm->mutex); the cycle shows it can.
 *
 * Built with -DNOUVEAU_SVMM_FIXED (tests/scenarios/nouveau-svmm-fixed, module
 * nouveau_svmm_fixed), the GET path allocates the nvkm_vma it may need before taking
 * vmm->mutex, so &vmm->mutex -> fs_reclaim, and with it the cycle, is gone.
 *
 * Built with -DNOUVEAU_SVMM_INTERVAL (tests/scenarios/nouveau-svmm-interval, module
 * nouveau_svmm_interval), svmm->mutex is taken by an interval notifier's invalidate callback,
 * as nouveau's HMM range faults do (nouveau_svm_range_invalidate()), instead of a classic
 * notifier's invalidate_range_start. The classic notifiers run inside SRCU's read side
 * (mn_hlist_invalidate_range_start()), which lockdep (since 5.x) records as a recursive read
 * between mmu_notifier_invalidate_range_start and &svmm->mutex, so lockdep's strong-path rule
 * does not close the cycle there; interval notifiers run outside it, and lockdep reports it.
 *
 * The misc device is /dev/<module name>; see nouveau_svmm.h for the ioctls.
 * Functions on the lock paths are noinline so that stacks read like the real splat.
 */
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/lockdep.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "nouveau_svmm.h"

#define NVKM_VMM_PAGE		0x10000ULL	/* 64 KiB GPU pages */
#define NVKM_VMM_START		0x100000000ULL
#define NVKM_VMM_LIMIT		0x10000000000ULL

/* ---- nvkm: the GPU virtual address space (one per device here, like cli->drm->client.vmm) */

struct nvkm_vma {
	struct list_head head;	/* in nvkm_vmm.list, by address; the list covers the whole VA */
	u64 addr;
	u64 size;
	bool used;
	void *owner;		/* the nouveau_cli that got it (used == true) */
};

struct nvkm_vmm {
	struct mutex mutex;	/* lockdep/locktrace class "&vmm->mutex" */
	struct list_head list;
	u64 start;
	u64 limit;
};

enum nvif_vmm_mthd {
	NVIF_VMM_V0_GET,
	NVIF_VMM_V0_PUT,
	NVIF_VMM_V0_PFNCLR,
};

struct nvif_vmm_v0 {
	u64 addr;
	u64 size;
};

static struct nvkm_vmm *nvkm_vmm;

static struct {
	atomic64_t invalidate_range_start;
	atomic64_t pfnclr;
	atomic64_t vmm_get;
	atomic64_t vmm_put;
	atomic64_t vma_alloc_locked;
	atomic64_t vma_alloc_unlocked;
} nouveau_svmm_stats;

static struct nvkm_vma *nvkm_vma_new(u64 addr, u64 size)
{
	struct nvkm_vma *vma = kzalloc(sizeof(*vma), GFP_KERNEL);

	if (vma) {
		INIT_LIST_HEAD(&vma->head);
		vma->addr = addr;
		vma->size = size;
	}
	return vma;
}

/*
 * Split the last @tail bytes of free @vma into a new free vma. This is the allocation the
 * lockdep splat points at (kmem_cache_alloc_trace <- nvkm_vma_tail): it runs with
 * vmm->mutex held, and GFP_KERNEL may enter direct reclaim, which may invalidate the pages
 * of an SVM process, whose notifier takes svmm->mutex and then vmm->mutex.
 */
static noinline struct nvkm_vma *
nvkm_vma_tail(struct nvkm_vma *vma, u64 tail, struct nvkm_vma **prealloc)
{
	struct nvkm_vma *new;

#ifdef NOUVEAU_SVMM_FIXED
	/* The fix: use the vma allocated by the caller before it took vmm->mutex. */
	new = *prealloc;
	*prealloc = NULL;
	if (WARN_ON_ONCE(!new))
		return NULL;
	new->addr = vma->addr + vma->size - tail;
	new->size = tail;
#else
	new = nvkm_vma_new(vma->addr + vma->size - tail, tail);	/* GFP_KERNEL under vmm->mutex */
	if (!new)
		return NULL;
	atomic64_inc(&nouveau_svmm_stats.vma_alloc_locked);
#endif
	vma->size -= tail;
	list_add(&new->head, &vma->head);
	return new;
}

static noinline int
nvkm_vmm_get_locked(struct nvkm_vmm *vmm, u64 size, void *owner,
		    struct nvkm_vma **prealloc, struct nvkm_vma **pvma)
{
	struct nvkm_vma *vma;

	lockdep_assert_held(&vmm->mutex);
	if (!size || size > vmm->limit - vmm->start)
		return -EINVAL;
	size = ALIGN(size, NVKM_VMM_PAGE);

	list_for_each_entry(vma, &vmm->list, head) {
		if (vma->used || vma->size < size)
			continue;
		if (vma->size > size && !nvkm_vma_tail(vma, vma->size - size, prealloc))
			return -ENOMEM;
		vma->used = true;
		vma->owner = owner;
		*pvma = vma;
		return 0;
	}
	return -ENOSPC;
}

static void nvkm_vmm_put_locked(struct nvkm_vmm *vmm, struct nvkm_vma *vma)
{
	struct nvkm_vma *next, *prev;

	lockdep_assert_held(&vmm->mutex);
	vma->used = false;
	vma->owner = NULL;
	if (!list_is_last(&vma->head, &vmm->list)) {
		next = list_next_entry(vma, head);
		if (!next->used) {
			vma->size += next->size;
			list_del(&next->head);
			kfree(next);
		}
	}
	if (!list_is_first(&vma->head, &vmm->list)) {
		prev = list_prev_entry(vma, head);
		if (!prev->used) {
			prev->size += vma->size;
			list_del(&vma->head);
			kfree(vma);
		}
	}
}

/* Drop the PTEs of [addr, addr + size) (here: count the vmas it overlaps). */
static unsigned long nvkm_vmm_pfn_unmap(struct nvkm_vmm *vmm, u64 addr, u64 size)
{
	struct nvkm_vma *vma;
	unsigned long n = 0;

	lockdep_assert_held(&vmm->mutex);
	list_for_each_entry(vma, &vmm->list, head)
		if (vma->used && vma->addr < addr + size && addr < vma->addr + vma->size)
			n++;
	return n;
}

/* The object method handler of the VMM class: every path takes vmm->mutex here. */
static noinline int
nvkm_uvmm_mthd(struct nvkm_vmm *vmm, u32 mthd, void *argv, u32 argc, void *owner)
{
	struct nvif_vmm_v0 *args = argv;
	struct nvkm_vma *vma, *prealloc = NULL;
	int ret;

	if (argc != sizeof(*args))
		return -ENOSYS;

	switch (mthd) {
	case NVIF_VMM_V0_GET:
#ifdef NOUVEAU_SVMM_FIXED
		/* The fix: allocate outside vmm->mutex; freed below if the split was not needed. */
		prealloc = nvkm_vma_new(0, 0);
		if (!prealloc)
			return -ENOMEM;
		atomic64_inc(&nouveau_svmm_stats.vma_alloc_unlocked);
#endif
		mutex_lock(&vmm->mutex);
		ret = nvkm_vmm_get_locked(vmm, args->size, owner, &prealloc, &vma);
		if (ret == 0)
			args->addr = vma->addr;
		mutex_unlock(&vmm->mutex);
		kfree(prealloc);
		if (ret == 0)
			atomic64_inc(&nouveau_svmm_stats.vmm_get);
		return ret;

	case NVIF_VMM_V0_PUT:
		ret = -ENOENT;
		mutex_lock(&vmm->mutex);
		list_for_each_entry(vma, &vmm->list, head) {
			if (vma->used && vma->owner == owner && vma->addr == args->addr) {
				nvkm_vmm_put_locked(vmm, vma);
				ret = 0;
				break;
			}
		}
		mutex_unlock(&vmm->mutex);
		if (ret == 0)
			atomic64_inc(&nouveau_svmm_stats.vmm_put);
		return ret;

	case NVIF_VMM_V0_PFNCLR:
		mutex_lock(&vmm->mutex);
		args->size = nvkm_vmm_pfn_unmap(vmm, args->addr, args->size);
		mutex_unlock(&vmm->mutex);
		atomic64_inc(&nouveau_svmm_stats.pfnclr);
		return 0;

	default:
		return -EINVAL;
	}
}

/* nvif -> nvkm: marshal the method arguments, like nvif_object_mthd() -> nvkm_ioctl(). */
static noinline int
nvif_object_mthd(struct nvkm_vmm *vmm, u32 mthd, void *data, u32 size, void *owner)
{
	u8 buf[32];
	int ret;

	if (size > sizeof(buf))
		return -E2BIG;
	memcpy(buf, data, size);
	ret = nvkm_uvmm_mthd(vmm, mthd, buf, size, owner);
	memcpy(data, buf, size);
	return ret;
}

static struct nvkm_vmm *nvkm_vmm_new(u64 start, u64 limit)
{
	struct nvkm_vmm *vmm;
	struct nvkm_vma *vma;

	vmm = kzalloc(sizeof(*vmm), GFP_KERNEL);
	if (!vmm)
		return NULL;
	vma = nvkm_vma_new(start, limit - start);
	if (!vma) {
		kfree(vmm);
		return NULL;
	}
	mutex_init(&vmm->mutex);
	INIT_LIST_HEAD(&vmm->list);
	vmm->start = start;
	vmm->limit = limit;
	list_add(&vma->head, &vmm->list);
	return vmm;
}

static void nvkm_vmm_del(struct nvkm_vmm *vmm)
{
	struct nvkm_vma *vma, *tmp;

	list_for_each_entry_safe(vma, tmp, &vmm->list, head) {
		WARN_ON(vma->used);
		list_del(&vma->head);
		kfree(vma);
	}
	mutex_destroy(&vmm->mutex);
	kfree(vmm);
}

/* ---- nouveau: the DRM client (one per open file) and its SVM state */

struct nouveau_svmm {
#ifdef NOUVEAU_SVMM_INTERVAL
	struct mmu_interval_notifier range;	/* over the whole user address space */
#else
	struct mmu_notifier notifier;
#endif
	struct nvkm_vmm *vmm;	/* NULL once nouveau_svmm_fini() ran; under svmm->mutex */
	struct mutex mutex;	/* lockdep/locktrace class "&svmm->mutex" */
};

struct nouveau_cli {
	struct mutex mutex;	/* "&cli->mutex": serialises SVM init, as in nouveau */
	struct nvkm_vmm *vmm;
	struct nouveau_svmm *svmm;
};

/* Invalidate the GPU mappings of [start, limit): NVIF_VMM_V0_PFNCLR on the vmm. */
static noinline void
nouveau_svmm_invalidate(struct nouveau_svmm *svmm, u64 start, u64 limit)
{
	struct nvif_vmm_v0 args = { .addr = start, .size = limit - start };
	int ret;

	ret = nvif_object_mthd(svmm->vmm, NVIF_VMM_V0_PFNCLR, &args, sizeof(args), NULL);
	WARN_ON_ONCE(ret);
}

#ifndef NOUVEAU_SVMM_INTERVAL
static noinline int
nouveau_svmm_invalidate_range_start(struct mmu_notifier *mn,
				    const struct mmu_notifier_range *update)
{
	struct nouveau_svmm *svmm = container_of(mn, struct nouveau_svmm, notifier);
	unsigned long start = update->start;
	unsigned long limit = update->end;

	if (!mmu_notifier_range_blockable(update))
		return -EAGAIN;

	mutex_lock(&svmm->mutex);
	atomic64_inc(&nouveau_svmm_stats.invalidate_range_start);
	if (unlikely(!svmm->vmm))
		goto out;
	if (limit > start)
		nouveau_svmm_invalidate(svmm, start, limit);
out:
	mutex_unlock(&svmm->mutex);
	return 0;
}

static const struct mmu_notifier_ops nouveau_mn = {
	.invalidate_range_start = nouveau_svmm_invalidate_range_start,
};
#else
/* As nouveau_svm_range_invalidate(): svmm->mutex around the sequence update. */
static noinline bool
nouveau_svm_range_invalidate(struct mmu_interval_notifier *mni,
			     const struct mmu_notifier_range *range, unsigned long cur_seq)
{
	struct nouveau_svmm *svmm = container_of(mni, struct nouveau_svmm, range);

	if (!mmu_notifier_range_blockable(range))
		return false;
	mutex_lock(&svmm->mutex);
	mmu_interval_set_seq(mni, cur_seq);
	atomic64_inc(&nouveau_svmm_stats.invalidate_range_start);
	if (svmm->vmm && range->end > range->start)
		nouveau_svmm_invalidate(svmm, range->start, range->end);
	mutex_unlock(&svmm->mutex);
	return true;
}

static const struct mmu_interval_notifier_ops nouveau_svm_mni_ops = {
	.invalidate = nouveau_svm_range_invalidate,
};
#endif

/* DRM_NOUVEAU_SVM_INIT: enable SVM for this client on the calling process's mm. */
static noinline int nouveau_svmm_init(struct nouveau_cli *cli)
{
	struct nouveau_svmm *svmm;
	int ret;

	if (!current->mm)
		return -EINVAL;

	/* Allocate tracking for SVM-enabled VMM. */
	svmm = kzalloc(sizeof(*svmm), GFP_KERNEL);
	if (!svmm)
		return -ENOMEM;
	svmm->vmm = cli->vmm;
	mutex_init(&svmm->mutex);

	/* Check that SVM isn't already enabled for the client. */
	mutex_lock(&cli->mutex);
	if (cli->svmm) {
		ret = -EBUSY;
		goto out_free;
	}

	/*
	 * As nouveau does: __mmu_notifier_register() under mmap_write_lock(). It is where
	 * lockdep primes fs_reclaim -> mmu_notifier_invalidate_range_start.
	 */
#ifdef NOUVEAU_SVMM_INTERVAL
	/* Registers the mm's notifier subscriptions itself (under mmap_write_lock). */
	ret = mmu_interval_notifier_insert(&svmm->range, current->mm, 0, TASK_SIZE & PAGE_MASK,
					   &nouveau_svm_mni_ops);
	if (ret)
		goto out_free;
	cli->svmm = svmm;
	mutex_unlock(&cli->mutex);
	return 0;
#else
	mmap_write_lock(current->mm);
	svmm->notifier.ops = &nouveau_mn;
	ret = __mmu_notifier_register(&svmm->notifier, current->mm);
	if (ret)
		goto out_mm_unlock;
	cli->svmm = svmm;
	mmap_write_unlock(current->mm);
	mutex_unlock(&cli->mutex);
	return 0;

out_mm_unlock:
	mmap_write_unlock(current->mm);
#endif
out_free:
	mutex_unlock(&cli->mutex);
	mutex_destroy(&svmm->mutex);
	kfree(svmm);
	return ret;
}

static noinline void nouveau_svmm_fini(struct nouveau_svmm **psvmm)
{
	struct nouveau_svmm *svmm = *psvmm;

	if (!svmm)
		return;
	mutex_lock(&svmm->mutex);
	svmm->vmm = NULL;
	mutex_unlock(&svmm->mutex);
	/* Synchronous: no callback runs after this returns; drops the mm reference. */
#ifdef NOUVEAU_SVMM_INTERVAL
	mmu_interval_notifier_remove(&svmm->range);
#else
	mmu_notifier_unregister(&svmm->notifier, svmm->notifier.mm);
#endif
	mutex_destroy(&svmm->mutex);
	kfree(svmm);
	*psvmm = NULL;
}

/* nouveau_vma_new() -> nvif_vmm_get(): allocate GPU virtual address space. */
static noinline int nvif_vmm_get(struct nouveau_cli *cli, struct nouveau_svmm_vmm_get *req)
{
	struct nvif_vmm_v0 args = { .size = req->size };
	int ret;

	ret = nvif_object_mthd(cli->vmm, NVIF_VMM_V0_GET, &args, sizeof(args), cli);
	if (ret == 0)
		req->addr = args.addr;
	return ret;
}

static int nvif_vmm_put(struct nouveau_cli *cli, u64 addr)
{
	struct nvif_vmm_v0 args = { .addr = addr };

	return nvif_object_mthd(cli->vmm, NVIF_VMM_V0_PUT, &args, sizeof(args), cli);
}

/* ---- the character device */

static int nouveau_svmm_open(struct inode *inode, struct file *file)
{
	struct nouveau_cli *cli = kzalloc(sizeof(*cli), GFP_KERNEL);

	if (!cli)
		return -ENOMEM;
	mutex_init(&cli->mutex);
	cli->vmm = nvkm_vmm;
	file->private_data = cli;
	return 0;
}

static int nouveau_svmm_release(struct inode *inode, struct file *file)
{
	struct nouveau_cli *cli = file->private_data;
	struct nvkm_vmm *vmm = cli->vmm;
	struct nvkm_vma *vma;
	bool again;

	nouveau_svmm_fini(&cli->svmm);

	/* Give back the address space the client still holds. */
	mutex_lock(&vmm->mutex);
	do {
		again = false;
		list_for_each_entry(vma, &vmm->list, head) {
			if (vma->used && vma->owner == cli) {
				nvkm_vmm_put_locked(vmm, vma);	/* may free vma: rescan */
				again = true;
				break;
			}
		}
	} while (again);
	mutex_unlock(&vmm->mutex);

	mutex_destroy(&cli->mutex);
	kfree(cli);
	return 0;
}

static long nouveau_svmm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct nouveau_cli *cli = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct nouveau_svmm_vmm_get req;
	struct nouveau_svmm_stats stats;
	int ret;

	switch (cmd) {
	case NOUVEAU_SVMM_INIT:
		ret = nouveau_svmm_init(cli);
		break;
	case NOUVEAU_VMM_GET:
		if (copy_from_user(&req, uarg, sizeof(req)))
			return -EFAULT;
		ret = nvif_vmm_get(cli, &req);
		if (ret == 0 && copy_to_user(uarg, &req, sizeof(req)))
			ret = -EFAULT;
		break;
	case NOUVEAU_VMM_PUT:
		if (copy_from_user(&req, uarg, sizeof(req)))
			return -EFAULT;
		ret = nvif_vmm_put(cli, req.addr);
		break;
	case NOUVEAU_SVMM_STATS:
		memset(&stats, 0, sizeof(stats));
		stats.invalidate_range_start =
			atomic64_read(&nouveau_svmm_stats.invalidate_range_start);
		stats.pfnclr = atomic64_read(&nouveau_svmm_stats.pfnclr);
		stats.vmm_get = atomic64_read(&nouveau_svmm_stats.vmm_get);
		stats.vmm_put = atomic64_read(&nouveau_svmm_stats.vmm_put);
		stats.vma_alloc_locked = atomic64_read(&nouveau_svmm_stats.vma_alloc_locked);
		stats.vma_alloc_unlocked = atomic64_read(&nouveau_svmm_stats.vma_alloc_unlocked);
		ret = copy_to_user(uarg, &stats, sizeof(stats)) ? -EFAULT : 0;
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	return ret;
}

static const struct file_operations nouveau_svmm_fops = {
	.owner = THIS_MODULE,
	.open = nouveau_svmm_open,
	.release = nouveau_svmm_release,
	.unlocked_ioctl = nouveau_svmm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice nouveau_svmm_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = KBUILD_MODNAME,		/* /dev/nouveau_svmm or /dev/nouveau_svmm_fixed */
	.fops = &nouveau_svmm_fops,
	.mode = 0666,
};

static int __init nouveau_svmm_module_init(void)
{
	int ret;

	nvkm_vmm = nvkm_vmm_new(NVKM_VMM_START, NVKM_VMM_LIMIT);
	if (!nvkm_vmm)
		return -ENOMEM;
	ret = misc_register(&nouveau_svmm_dev);
	if (ret) {
		nvkm_vmm_del(nvkm_vmm);
		return ret;
	}
	pr_info("%s: /dev/%s ready%s\n", KBUILD_MODNAME, nouveau_svmm_dev.name,
		IS_ENABLED(NOUVEAU_SVMM_FIXED) ? " (fixed: no allocation under vmm->mutex)" : "");
	return 0;
}

static void __exit nouveau_svmm_module_exit(void)
{
	/* Open files pin the module (fops.owner), so no client is left here. */
	misc_deregister(&nouveau_svmm_dev);
	nvkm_vmm_del(nvkm_vmm);
}

module_init(nouveau_svmm_module_init);
module_exit(nouveau_svmm_module_exit);

MODULE_LICENSE("GPL");	/* __mmu_notifier_register() is EXPORT_SYMBOL_GPL */
MODULE_DESCRIPTION("locktrace test: model of nouveau's SVM vmm->mutex/svmm->mutex/mmu_notifier lock order");
