/* A reader/writer inversion on two pairs of rwlocks, one pair of each glibc kind:
 *   thread 1: wrlock(a); rdlock(b)      thread 2: rdlock(b); wrlock(a)
 * With the default (reader-preferring) kind, thread 1's read of b never waits for a reader,
 * so this is no deadlock (lockdep: b is a recursive read in both). With
 * PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP a writer waiting on b makes thread 1 wait
 * behind thread 2, which waits for a: a deadlock. The threads run one after the other, so
 * nothing hangs. Waits for a byte on stdin first; lingers after. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_rwlock_t reader_a, reader_b, writer_a, writer_b;

static void *first(void *arg) {
    pthread_rwlock_t **pair = arg;
    pthread_rwlock_wrlock(pair[0]);
    pthread_rwlock_rdlock(pair[1]);
    pthread_rwlock_unlock(pair[1]);
    pthread_rwlock_unlock(pair[0]);
    return NULL;
}

static void *second(void *arg) {
    pthread_rwlock_t **pair = arg;
    pthread_rwlock_rdlock(pair[1]);
    pthread_rwlock_wrlock(pair[0]);
    pthread_rwlock_unlock(pair[0]);
    pthread_rwlock_unlock(pair[1]);
    return NULL;
}

static void run(pthread_rwlock_t *a, pthread_rwlock_t *b) {
    pthread_rwlock_t *pair[2] = {a, b};
    pthread_t thread;
    pthread_create(&thread, NULL, first, pair);
    pthread_join(thread, NULL);
    pthread_create(&thread, NULL, second, pair);
    pthread_join(thread, NULL);
}

int main(void) {
    pthread_rwlockattr_t writer_kind;
    pthread_rwlockattr_init(&writer_kind);
    pthread_rwlockattr_setkind_np(&writer_kind, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    /* One init call per line: each lock is a class of its own (its init site). */
    pthread_rwlock_init(&reader_a, NULL);
    pthread_rwlock_init(&reader_b, NULL);
    pthread_rwlock_init(&writer_a, &writer_kind);
    pthread_rwlock_init(&writer_b, &writer_kind);
    run(&reader_a, &reader_b);
    run(&writer_a, &writer_b);
    sleep(1);
    return 0;
}
