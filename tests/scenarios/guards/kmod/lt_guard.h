/* SPDX-License-Identifier: GPL-2.0 */
/* ioctl interface shared by lt_guard.c and ../workload.c */
#ifndef LT_GUARD_H
#define LT_GUARD_H

#include <linux/ioctl.h>

#define LT_GUARD_MAGIC 'g'
/* ABBA of &inst_a/&inst_b, each order under another instance of one class (&objs[i].lock) */
#define LT_GUARD_INSTANCE_AB	_IO(LT_GUARD_MAGIC, 1)
#define LT_GUARD_INSTANCE_BA	_IO(LT_GUARD_MAGIC, 2)
/* ABBA of &read_a/&read_b, both orders under &read_gate held for read */
#define LT_GUARD_READ_AB	_IO(LT_GUARD_MAGIC, 3)
#define LT_GUARD_READ_BA	_IO(LT_GUARD_MAGIC, 4)
/* ABBA of &mutex_a/&mutex_b, both orders under the one &global_gate mutex */
#define LT_GUARD_MUTEX_AB	_IO(LT_GUARD_MAGIC, 5)
#define LT_GUARD_MUTEX_BA	_IO(LT_GUARD_MAGIC, 6)
/* ABBA of &wsem_a/&wsem_b, both orders under &write_gate held for write */
#define LT_GUARD_WSEM_AB	_IO(LT_GUARD_MAGIC, 7)
#define LT_GUARD_WSEM_BA	_IO(LT_GUARD_MAGIC, 8)
/* an mmu_notifier on the caller's mm whose invalidate_range_start takes &nofs_lock and
 * &noio_lock (unregistered when the file is closed) */
#define LT_GUARD_REGISTER	_IO(LT_GUARD_MAGIC, 9)
/* kmalloc(GFP_NOFS) with &nofs_lock held */
#define LT_GUARD_NOFS_ALLOC	_IO(LT_GUARD_MAGIC, 10)
/* kmalloc(GFP_KERNEL) inside memalloc_noio_save() with &noio_lock held */
#define LT_GUARD_NOIO_ALLOC	_IO(LT_GUARD_MAGIC, 11)
/* how many notifier callbacks ran */
#define LT_GUARD_CALLBACKS	_IO(LT_GUARD_MAGIC, 12)

#endif
