/* SPDX-License-Identifier: GPL-2.0 */
/* ioctl numbers shared by lt_sem.c and ../workload.c */
#ifndef LT_SEM_H
#define LT_SEM_H

#include <linux/ioctl.h>

#define LT_SEM_MAGIC 'S'
#define LT_SEM_TRY_OK       _IO(LT_SEM_MAGIC, 1) /* outer; trylock(try_ok) succeeds; after_try */
#define LT_SEM_TRY_FAIL     _IO(LT_SEM_MAGIC, 2) /* fail_holder; trylock(fail_holder) fails; after_fail */
#define LT_SEM_OUT_OF_ORDER _IO(LT_SEM_MAGIC, 3) /* o1; o2; unlock o1; o3 */
#define LT_SEM_RWSEM        _IO(LT_SEM_MAGIC, 4) /* read/write/downgrade/read-trylock cases */
#define LT_SEM_HOLD_INTR    _IO(LT_SEM_MAGIC, 5) /* take intr, sleep until LT_SEM_RELEASE_INTR */
#define LT_SEM_INTR_FAIL    _IO(LT_SEM_MAGIC, 6) /* intr_outer; mutex_lock_interruptible(intr) (signalled); after_intr */
#define LT_SEM_RELEASE_INTR _IO(LT_SEM_MAGIC, 7) /* wake the LT_SEM_HOLD_INTR task */
#define LT_SEM_INTR_HELD    _IO(LT_SEM_MAGIC, 8) /* returns 1 once intr is held by the holder */

#endif
