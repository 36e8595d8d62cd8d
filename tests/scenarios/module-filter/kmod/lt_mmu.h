/* SPDX-License-Identifier: GPL-2.0 */
#ifndef LT_MMU_H
#define LT_MMU_H

#include <linux/ioctl.h>

#define LT_MMU_MAGIC 'M'
#define LT_MMU_REGISTER   _IO(LT_MMU_MAGIC, 1) /* mmu_notifier_register() on the caller's mm */
#define LT_MMU_ALLOC      _IO(LT_MMU_MAGIC, 2) /* kmalloc(GFP_KERNEL) under &svmm->mutex */
#define LT_MMU_UNREGISTER _IO(LT_MMU_MAGIC, 3)

#endif
