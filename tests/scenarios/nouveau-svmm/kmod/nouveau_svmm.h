/* SPDX-License-Identifier: GPL-2.0 */
/* ioctl interface shared by nouveau_svmm.c and ../workload.c */
#ifndef NOUVEAU_SVMM_H
#define NOUVEAU_SVMM_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* NOUVEAU_VMM_GET / NOUVEAU_VMM_PUT argument */
struct nouveau_svmm_vmm_get {
	__u64 size;	/* in: bytes of GPU virtual address space */
	__u64 addr;	/* out (GET), in (PUT) */
};

/* Module-wide counters, to show from user space what ran in the kernel. */
struct nouveau_svmm_stats {
	__u64 invalidate_range_start;	/* notifier callbacks that took svmm->mutex */
	__u64 pfnclr;			/* NVIF_VMM_V0_PFNCLR under vmm->mutex */
	__u64 vmm_get;			/* NVIF_VMM_V0_GET under vmm->mutex */
	__u64 vmm_put;			/* NVIF_VMM_V0_PUT under vmm->mutex */
	__u64 vma_alloc_locked;		/* nvkm_vma allocations while vmm->mutex was held */
	__u64 vma_alloc_unlocked;	/* nvkm_vma allocations before vmm->mutex (the fix) */
};

#define NOUVEAU_SVMM_MAGIC 'n'
/* nouveau_svmm_init(): per-process svmm + mmu_notifier on current->mm */
#define NOUVEAU_SVMM_INIT	_IO(NOUVEAU_SVMM_MAGIC, 0x40)
/* nvkm_uvmm_mthd(NVIF_VMM_V0_GET): allocate GPU VA under vmm->mutex */
#define NOUVEAU_VMM_GET		_IOWR(NOUVEAU_SVMM_MAGIC, 0x41, struct nouveau_svmm_vmm_get)
/* nvkm_uvmm_mthd(NVIF_VMM_V0_PUT): release it */
#define NOUVEAU_VMM_PUT		_IOW(NOUVEAU_SVMM_MAGIC, 0x42, struct nouveau_svmm_vmm_get)
#define NOUVEAU_SVMM_STATS	_IOR(NOUVEAU_SVMM_MAGIC, 0x43, struct nouveau_svmm_stats)

#endif
