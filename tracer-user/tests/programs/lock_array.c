/* Instances of one class: an array of five mutexes initialised in a loop (one init site,
 * so one class), taken two at a time by "philosophers", one thread after the other (so
 * nothing hangs). Modes:
 *   pair     chop[1] then chop[2], later chop[2] then chop[1]: an inversion of two elements;
 *   ring     philosopher i takes chop[i] then chop[(i + 1) % 5]: the dining philosophers'
 *            ring, one cycle through all five;
 *   ordered  each takes the lower-numbered chopstick first: a consistent order, no finding;
 *   heap     as pair, on a heap-allocated array;
 *   deadlock the five philosophers at once, each holding its left chopstick before taking
 *            its right: a real deadlock, hangs forever (the test kills it).
 * Waits for a byte on stdin before initialising (the tracer attaches first); lingers for
 * symbolization. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 5
pthread_mutex_t chop[N];
static pthread_mutex_t *forks = chop;

struct seat {
    int first;
    int second;
};

__attribute__((noinline)) static void *philosopher(void *arg) {
    struct seat *seat = arg;
    pthread_mutex_lock(&forks[seat->first]);
    pthread_mutex_lock(&forks[seat->second]);
    pthread_mutex_unlock(&forks[seat->second]);
    pthread_mutex_unlock(&forks[seat->first]);
    return NULL;
}

static pthread_barrier_t all_seated;

__attribute__((noinline)) static void *hungry_philosopher(void *arg) {
    struct seat *seat = arg;
    pthread_mutex_lock(&forks[seat->first]);
    pthread_barrier_wait(&all_seated);
    pthread_mutex_lock(&forks[seat->second]);
    return NULL;
}

static void dine(int first, int second) {
    struct seat seat = {first, second};
    pthread_t thread;
    pthread_create(&thread, NULL, philosopher, &seat);
    pthread_join(thread, NULL);
}

__attribute__((noinline)) static void set_table(void) {
    for (int i = 0; i < N; i++)
        pthread_mutex_init(&forks[i], NULL);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "pair";
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    if (strcmp(mode, "heap") == 0)
        forks = calloc(N, sizeof(pthread_mutex_t));
    set_table();
    if (strcmp(mode, "pair") == 0 || strcmp(mode, "heap") == 0) {
        dine(1, 2);
        dine(2, 1);
    } else if (strcmp(mode, "ring") == 0) {
        for (int i = 0; i < N; i++)
            dine(i, (i + 1) % N);
    } else if (strcmp(mode, "ordered") == 0) {
        for (int i = 0; i < N; i++) {
            int next = (i + 1) % N;
            dine(i < next ? i : next, i < next ? next : i);
        }
    } else if (strcmp(mode, "deadlock") == 0) {
        static struct seat seats[N];
        pthread_t threads[N];
        pthread_barrier_init(&all_seated, NULL, N);
        for (int i = 0; i < N; i++) {
            seats[i] = (struct seat){i, (i + 1) % N};
            pthread_create(&threads[i], NULL, hungry_philosopher, &seats[i]);
        }
        pthread_join(threads[0], NULL);
    } else {
        return 2;
    }
    sleep(1);
    return 0;
}
