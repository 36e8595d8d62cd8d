/* User-space lock overhead (run by `cargo xtask bench` on the host): THREADS threads each
 * take their own pair of mutexes, nested (outer, inner), in a loop for SECONDS seconds and
 * the total of lock pairs per second is printed as `ops_per_s=N`. Waits for a byte on stdin
 * before starting, so that a tracer can attach to it first; prints its pid first. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct worker {
    pthread_t thread;
    pthread_mutex_t outer, inner;
    double seconds;
    unsigned long ops;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void take_pair(struct worker *w) {
    pthread_mutex_lock(&w->outer);
    pthread_mutex_lock(&w->inner);
    pthread_mutex_unlock(&w->inner);
    pthread_mutex_unlock(&w->outer);
}

static void *run(void *arg) {
    struct worker *w = arg;
    double end = now() + w->seconds;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) take_pair(w);
        w->ops += 1000;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double seconds = argc > 2 ? atof(argv[2]) : 2;
    if (threads < 1 || threads > 64 || seconds <= 0) return 2;
    struct worker workers[64];
    for (int i = 0; i < threads; i++) {
        pthread_mutex_init(&workers[i].outer, NULL);
        pthread_mutex_init(&workers[i].inner, NULL);
        workers[i].seconds = seconds;
        workers[i].ops = 0;
    }
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    double start = now();
    for (int i = 0; i < threads; i++) pthread_create(&workers[i].thread, NULL, run, &workers[i]);
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        total += workers[i].ops;
    }
    printf("ops_per_s=%.0f\n", total / (now() - start));
    return 0;
}
