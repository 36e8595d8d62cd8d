/* Lock classes by initialisation site: every `struct pair` has two mutexes initialised
 * by pthread_mutex_init in make_pair. Two pairs, each locked in one order only, but the
 * orders differ: no instance is ever taken in both orders, yet lockdep (one class per
 * init site) sees the inversion — as a kernel struct's mutexes would be. Mode "same":
 * both pairs in the same order. Waits for a byte on stdin before locking (the tracer
 * attaches first, so the initialisations are seen); lingers for symbolization. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pair {
    pthread_mutex_t first;
    pthread_mutex_t second;
};

__attribute__((noinline)) struct pair *make_pair(void) {
    struct pair *pair = calloc(1, sizeof(*pair));
    pthread_mutex_init(&pair->first, NULL);
    pthread_mutex_init(&pair->second, NULL);
    return pair;
}

__attribute__((noinline)) void lock_in_order(pthread_mutex_t *outer, pthread_mutex_t *inner) {
    pthread_mutex_lock(outer);
    pthread_mutex_lock(inner);
    pthread_mutex_unlock(inner);
    pthread_mutex_unlock(outer);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "inverted";
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    struct pair *one = make_pair(), *two = make_pair();
    lock_in_order(&one->first, &one->second);
    if (strcmp(mode, "same") == 0)
        lock_in_order(&two->first, &two->second);
    else
        lock_in_order(&two->second, &two->first);
    pthread_mutex_destroy(&one->first);
    pthread_mutex_destroy(&one->second);
    pthread_mutex_destroy(&two->first);
    pthread_mutex_destroy(&two->second);
    sleep(1);
    return 0;
}
