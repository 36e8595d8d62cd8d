/* SPDX-License-Identifier: GPL-2.0 */
/* ioctl numbers shared by lt_plain.c and ../workload.c */
#ifndef LT_PLAIN_H
#define LT_PLAIN_H

#include <linux/ioctl.h>

#define LT_PLAIN_MAGIC 'L'
/* obj[0]: lock a_lock, then b_lock */
#define LT_PLAIN_AB _IO(LT_PLAIN_MAGIC, 1)
/* obj[1]: lock b_lock, then a_lock */
#define LT_PLAIN_BA _IO(LT_PLAIN_MAGIC, 2)

#endif
