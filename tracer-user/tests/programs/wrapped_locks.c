/* Locks initialised inside a shared library's wrapper (as GLib's g_mutex_init or a C++
 * class's constructor do): every lock of the program has one pthread_mutex_init call site,
 * inside libwrapped.so (one class, by that site alone), and each its own caller in main. Built twice by the test: with -DWRAPPER_LIBRARY as
 * libwrapped.so, and without as the program linked against it. The program takes two of
 * the wrapper's locks in opposite orders, one thread after the other (nothing hangs).
 * Waits for a byte on stdin first; lingers for symbolization. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct wrapped_lock {
    pthread_mutex_t mutex;
    const char *what;
};

#ifdef WRAPPER_LIBRARY
__attribute__((noinline)) struct wrapped_lock *wrapped_lock_new(const char *what) {
    struct wrapped_lock *lock = calloc(1, sizeof(*lock));
    pthread_mutex_init(&lock->mutex, NULL);
    lock->what = what;
    return lock;
}

__attribute__((noinline)) void wrapped_lock_take(struct wrapped_lock *lock) {
    pthread_mutex_lock(&lock->mutex);
}

__attribute__((noinline)) void wrapped_lock_drop(struct wrapped_lock *lock) {
    pthread_mutex_unlock(&lock->mutex);
}
#else
struct wrapped_lock *wrapped_lock_new(const char *what);
void wrapped_lock_take(struct wrapped_lock *lock);
void wrapped_lock_drop(struct wrapped_lock *lock);

static struct wrapped_lock *accounts, *journal;

__attribute__((noinline)) static void *post_entry(void *unused) {
    wrapped_lock_take(accounts);
    wrapped_lock_take(journal);
    wrapped_lock_drop(journal);
    wrapped_lock_drop(accounts);
    return unused;
}

__attribute__((noinline)) static void *audit(void *unused) {
    wrapped_lock_take(journal);
    wrapped_lock_take(accounts);
    wrapped_lock_drop(accounts);
    wrapped_lock_drop(journal);
    return unused;
}

static void run(void *(*body)(void *)) {
    pthread_t thread;
    pthread_create(&thread, NULL, body, NULL);
    pthread_join(thread, NULL);
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    accounts = wrapped_lock_new("accounts");
    journal = wrapped_lock_new("journal");
    run(post_entry);
    run(audit);
    sleep(1);
    return 0;
}
#endif
