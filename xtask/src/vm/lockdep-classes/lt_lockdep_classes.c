// SPDX-License-Identifier: GPL-2.0
/*
 * /proc/lt_lockdep_classes: what /proc/lockdep does not print about each lock class, for
 * `cargo xtask lockdep-compare` on the lockdep kernel. One line per class in use:
 *
 *   KEY LOCK_TYPE WAIT_TYPE VALIDATE NAME
 *
 * KEY is printed with %p like /proc/lockdep's, so the two files join on it (and on NAME,
 * spelt as lockdep_proc.c spells it: #version, /subclass). WAIT_TYPE is the class's inner
 * wait type (inv, free, spin, config, sleep: lockdep_types.h; sleep for mutexes and rwsems)
 * and LOCK_TYPE normal, percpu (percpu_rw_semaphore, local_lock) or override: together they
 * tell mutexes and rwsems from the kinds locktrace does not trace. VALIDATE is novalidate
 * for lockdep_set_novalidate_class() classes (struct device's mutex), whose dependencies
 * lockdep does not track, else validate. Reads only; lockdep's table is found through
 * kallsyms because it is not exported.
 */
#include <linux/kprobes.h>
#include <linux/lockdep.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>



static struct lock_class *lt_classes;
static unsigned long *lt_in_use;

static const char *lt_wait_type(u8 wait)
{
	/* LD_WAIT_CONFIG is LD_WAIT_SPIN without CONFIG_PROVE_RAW_LOCK_NESTING. */
	if (wait == LD_WAIT_SLEEP)
		return "sleep";
	if (wait == LD_WAIT_SPIN)
		return "spin";
	if (wait == LD_WAIT_CONFIG)
		return "config";
	if (wait == LD_WAIT_FREE)
		return "free";
	return "inv";
}

static const char *lt_lock_type(u8 type)
{
	if (type == LD_LOCK_PERCPU)
		return "percpu";
	if (type == LD_LOCK_WAIT_OVERRIDE)
		return "override";
	return "normal";
}

static int lt_show(struct seq_file *m, void *v)
{
	unsigned long i;

	for (i = 0; i < MAX_LOCKDEP_KEYS; i++) {
		const struct lock_class *class = &lt_classes[i];
		const char *name = READ_ONCE(class->name);

		if (!test_bit(i, lt_in_use) || !name)
			continue;
		seq_printf(m, "%p %s %s %s %s", class->key, lt_lock_type(class->lock_type),
			   lt_wait_type(class->wait_type_inner),
			   (const void *)class->key == (const void *)&__lockdep_no_validate__ ? "novalidate" : "validate",
			   name);
		if (class->name_version > 1)
			seq_printf(m, "#%d", class->name_version);
		if (class->subclass)
			seq_printf(m, "/%d", class->subclass);
		seq_putc(m, '\n');
	}
	return 0;
}

static unsigned long lt_lookup(const char *symbol)
{
	static unsigned long (*kallsyms_lookup_name_fn)(const char *);

	if (!kallsyms_lookup_name_fn) {
		struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };

		if (register_kprobe(&kp) < 0)
			return 0;
		kallsyms_lookup_name_fn = (void *)kp.addr;
		unregister_kprobe(&kp);
	}
	return kallsyms_lookup_name_fn(symbol);
}

static int __init lt_init(void)
{
	lt_classes = (struct lock_class *)lt_lookup("lock_classes");
	lt_in_use = (unsigned long *)lt_lookup("lock_classes_in_use");
	if (!lt_classes || !lt_in_use) {
		pr_err("lt_lockdep_classes: lockdep's class table not found\n");
		return -ENOENT;
	}
	if (!proc_create_single("lt_lockdep_classes", 0444, NULL, lt_show))
		return -ENOMEM;
	return 0;
}

static void __exit lt_exit(void)
{
	remove_proc_entry("lt_lockdep_classes", NULL);
}

module_init(lt_init);
module_exit(lt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lockdep class kinds for locktrace's lockdep comparison");
