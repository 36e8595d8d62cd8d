/* SPDX-License-Identifier: GPL-2.0 */
/* ioctl numbers shared by lt_deadlock.c and ../workload.c */
#ifndef LT_DEADLOCK_H
#define LT_DEADLOCK_H

#include <linux/ioctl.h>

#define LT_DEADLOCK_MAGIC 'D'
/* take bank->ledger_lock, sleep, then bank->audit_lock */
#define LT_DEADLOCK_LEDGER_THEN_AUDIT _IO(LT_DEADLOCK_MAGIC, 1)
/* take bank->audit_lock, sleep, then bank->ledger_lock */
#define LT_DEADLOCK_AUDIT_THEN_LEDGER _IO(LT_DEADLOCK_MAGIC, 2)
/* take bank->ledger_lock alone (blocks behind a deadlock on it) */
#define LT_DEADLOCK_LEDGER _IO(LT_DEADLOCK_MAGIC, 3)

#endif
