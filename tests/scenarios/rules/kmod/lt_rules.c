// SPDX-License-Identifier: GPL-2.0
/*
 * lt_rules: runs the cases of locktrace's rule table (lockgraph/tests/data/lockdep-rules.txt)
 * in the kernel, so that the eBPF side is checked against the same table as the offline
 * simulator (the rules scenario). Each write to /dev/lt_rules is one case, run by the writing task:
 *
 *   N STEP LOCK; STEP LOCK; ...
 *
 * N is the case's number in the table (1-based), STEP is lock, rlock, trylock, rtrylock,
 * iolock or unlock, LOCK is CLASS.INSTANCE with a one-letter class (a-z) and an instance 1-4.
 * Every lock is an rwsem, but for iolock (a mutex, taken with mutex_lock_io()); the class of CLASS in case N is named "rN.CLASS" (its own name string,
 * so its own class), so cases never share classes. Locks still held at the end of a case
 * are released, innermost first. One writer at a time (the workload runs the cases in
 * turn): the static step array is not shared.
 */
#include <linux/ctype.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#define LT_RULES_CASES		64
#define LT_RULES_INSTANCES	4
#define LT_RULES_STEPS		32

enum lt_mode { LT_FREE, LT_READ, LT_WRITE, LT_MUTEX };

struct lt_rule_class {
	char name[16];
	/*
	 * A key of its own per class, as lockdep requires (one key with several names is one
	 * lockdep class and a "same key, different name" warning). Registered because it is
	 * not static; on a production kernel the key is empty and only its address counts.
	 */
	struct lock_class_key key;
	struct rw_semaphore sem[LT_RULES_INSTANCES];
	/* Same key and name as the rwsems: the same class (lockdep keys classes by key). */
	struct mutex mutex[LT_RULES_INSTANCES];
	enum lt_mode mode[LT_RULES_INSTANCES];
};

static struct lt_rule_class *classes[LT_RULES_CASES][26];

static struct lt_rule_class *lt_class(int n, int letter)
{
	struct lt_rule_class *class = classes[n][letter];
	int i;

	if (class)
		return class;
	class = kzalloc(sizeof(*class), GFP_KERNEL);
	if (!class)
		return NULL;
	snprintf(class->name, sizeof(class->name), "r%d.%c", n, 'a' + letter);
	lockdep_register_key(&class->key);
	/* One key and name per class: its own class, as two init sites are. */
	for (i = 0; i < LT_RULES_INSTANCES; i++) {
		__init_rwsem(&class->sem[i], class->name, &class->key);
		__mutex_init(&class->mutex[i], class->name, &class->key);
	}
	classes[n][letter] = class;
	return class;
}

static noinline void lt_release(struct lt_rule_class *class, int i)
{
	if (class->mode[i] == LT_READ)
		up_read(&class->sem[i]);
	else if (class->mode[i] == LT_WRITE)
		up_write(&class->sem[i]);
	else if (class->mode[i] == LT_MUTEX)
		mutex_unlock(&class->mutex[i]);
	class->mode[i] = LT_FREE;
}

static noinline int lt_step(const char *op, struct lt_rule_class *class, int i)
{
	if (!strcmp(op, "unlock")) {
		if (class->mode[i] == LT_FREE)
			return -EINVAL;
		lt_release(class, i);
		return 0;
	}
	if (class->mode[i] != LT_FREE)
		return -EBUSY;	/* one task: taking a held instance again would deadlock */
	if (!strcmp(op, "lock")) {
		down_write(&class->sem[i]);
		class->mode[i] = LT_WRITE;
	} else if (!strcmp(op, "rlock")) {
		down_read(&class->sem[i]);
		class->mode[i] = LT_READ;
	} else if (!strcmp(op, "iolock")) {
		/* A nested entry point: mutex_lock_io() calls mutex_lock(). */
		mutex_lock_io(&class->mutex[i]);
		class->mode[i] = LT_MUTEX;
	} else if (!strcmp(op, "trylock")) {
		if (!down_write_trylock(&class->sem[i]))
			return -EAGAIN;
		class->mode[i] = LT_WRITE;
	} else if (!strcmp(op, "rtrylock")) {
		if (!down_read_trylock(&class->sem[i]))
			return -EAGAIN;
		class->mode[i] = LT_READ;
	} else {
		return -EINVAL;
	}
	return 0;
}

struct lt_rule_step {
	char op[12];
	struct lt_rule_class *class;
	int instance;
};

/* Parsed, and every class made, before the first lock: nothing allocates under them. */
static int lt_parse_case(char *text, struct lt_rule_step *steps, int *count)
{
	char *step, *cursor = text;
	int n;

	step = strsep(&cursor, " ");
	if (!step || kstrtoint(step, 10, &n) || n < 1 || n >= LT_RULES_CASES || !cursor)
		return -EINVAL;
	*count = 0;
	while ((step = strsep(&cursor, ";")) != NULL) {
		struct lt_rule_step *parsed = &steps[*count];
		char letter;

		step = strim(step);
		if (!*step)
			continue;
		if (*count == LT_RULES_STEPS)
			return -E2BIG;
		if (sscanf(step, "%11s %c.%d", parsed->op, &letter, &parsed->instance) != 3 ||
		    !islower(letter) || parsed->instance < 1 ||
		    parsed->instance > LT_RULES_INSTANCES)
			return -EINVAL;
		parsed->instance--;
		parsed->class = lt_class(n, letter - 'a');
		if (!parsed->class)
			return -ENOMEM;
		(*count)++;
	}
	return 0;
}

static int lt_run_case(char *text)
{
	static struct lt_rule_step steps[LT_RULES_STEPS];
	int count, ret, i;

	ret = lt_parse_case(text, steps, &count);
	for (i = 0; !ret && i < count; i++)
		ret = lt_step(steps[i].op, steps[i].class, steps[i].instance);
	/* Whatever is still held, innermost first. */
	for (i = count - 1; i >= 0; i--)
		if (steps[i].class && steps[i].class->mode[steps[i].instance] != LT_FREE)
			lt_release(steps[i].class, steps[i].instance);
	return ret;
}

static ssize_t lt_rules_write(struct file *file, const char __user *buf, size_t len,
			      loff_t *pos)
{
	char *text;
	int ret;

	if (len > 1024)
		return -E2BIG;
	text = memdup_user_nul(buf, len);
	if (IS_ERR(text))
		return PTR_ERR(text);
	/* No lock around a case: it would be the guard of everything the case does. */
	ret = lt_run_case(strim(text));
	kfree(text);
	return ret ? ret : len;
}

static const struct file_operations lt_rules_fops = {
	.owner = THIS_MODULE,
	.write = lt_rules_write,
	.llseek = noop_llseek,
};

static struct miscdevice lt_rules_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lt_rules",
	.fops = &lt_rules_fops,
	.mode = 0666,
};

static int __init lt_rules_init(void)
{
	return misc_register(&lt_rules_dev);
}

static void __exit lt_rules_exit(void)
{
	int n, c;

	misc_deregister(&lt_rules_dev);
	for (n = 0; n < LT_RULES_CASES; n++)
		for (c = 0; c < 26; c++) {
			if (!classes[n][c])
				continue;
			lockdep_unregister_key(&classes[n][c]->key);
			kfree(classes[n][c]);
		}
}

module_init(lt_rules_init);
module_exit(lt_rules_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("locktrace test: the rule table's cases run in the kernel");
