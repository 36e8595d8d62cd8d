/* A mutex unlocked by a thread that does not hold it. A normal mutex: glibc lets it
 * through (undefined behaviour), the holder holds it no longer, and its next lock depends
 * on nothing. An error-checking mutex: the unlock fails with EPERM, the holder still holds
 * it, and its next lock depends on it.
 *   holder: lock(normal); | main: unlock(normal) | holder: lock(after_normal)
 *   holder: lock(checked); | main: unlock(checked) = EPERM | holder: lock(after_checked)
 * Waits for a byte on stdin first; lingers after. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

pthread_mutex_t normal = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t after_normal = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t checked = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
pthread_mutex_t after_checked = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t step;

static void *holder(void *arg) {
    (void)arg;
    pthread_mutex_lock(&normal);
    pthread_barrier_wait(&step); /* main unlocks `normal` */
    pthread_barrier_wait(&step);
    pthread_mutex_lock(&after_normal);
    pthread_mutex_unlock(&after_normal);
    pthread_mutex_lock(&checked);
    pthread_barrier_wait(&step); /* main tries to unlock `checked` */
    pthread_barrier_wait(&step);
    pthread_mutex_lock(&after_checked);
    pthread_mutex_unlock(&after_checked);
    pthread_mutex_unlock(&checked);
    return NULL;
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    pthread_barrier_init(&step, NULL, 2);
    pthread_t thread;
    pthread_create(&thread, NULL, holder, NULL);
    pthread_barrier_wait(&step);
    pthread_mutex_unlock(&normal);
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);
    if (pthread_mutex_unlock(&checked) != EPERM) return 3;
    pthread_barrier_wait(&step);
    pthread_join(thread, NULL);
    sleep(1);
    return 0;
}
