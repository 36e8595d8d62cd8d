/* More of everything than small in-kernel maps hold (run with --map-capacity): LOCKS mutexes
 * initialised at one site (one lock -> class entry each), each then taken once; THREADS
 * threads holding a lock at once (one held-lock stack each). Waits for a byte on stdin first;
 * lingers after. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define LOCKS 1000
#define THREADS 64
static pthread_mutex_t m[LOCKS];
static pthread_mutex_t per_thread[THREADS];
static pthread_barrier_t all_holding;

static void *hold_one(void *arg) {
    pthread_mutex_t *lock = arg;
    pthread_mutex_lock(lock);
    pthread_barrier_wait(&all_holding);
    pthread_mutex_unlock(lock);
    return NULL;
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    for (int i = 0; i < LOCKS; i++) pthread_mutex_init(&m[i], NULL);
    for (int i = 0; i < LOCKS; i++) {
        pthread_mutex_lock(&m[i]);
        pthread_mutex_unlock(&m[i]);
    }
    pthread_barrier_init(&all_holding, NULL, THREADS);
    pthread_t threads[THREADS];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < THREADS; i++) {
        pthread_mutex_init(&per_thread[i], NULL);
        if (pthread_create(&threads[i], &attr, hold_one, &per_thread[i]) != 0) return 3;
    }
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    sleep(1);
    return 0;
}
