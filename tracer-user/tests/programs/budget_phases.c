// Phases driven by bytes on stdin, for the overhead-budget test: 'g' starts a thread that
// nests A -> B as fast as it can; 'i' stops it (the load falls); 'c' then takes a new order
// C -> D and its inversion D -> C, and the program exits.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t c = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t d = PTHREAD_MUTEX_INITIALIZER;
static atomic_int busy = 1;

static void *nest_a_b(void *unused) {
    (void)unused;
    while (atomic_load(&busy)) {
        pthread_mutex_lock(&a);
        pthread_mutex_lock(&b);
        pthread_mutex_unlock(&b);
        pthread_mutex_unlock(&a);
    }
    return NULL;
}

static void wait_byte(int wanted) {
    int ch;
    while ((ch = getchar()) != EOF && ch != wanted) {
    }
    if (ch == EOF)
        exit(1);
}

static void take_in_order(pthread_mutex_t *outer, pthread_mutex_t *inner) {
    pthread_mutex_lock(outer);
    pthread_mutex_lock(inner);
    pthread_mutex_unlock(inner);
    pthread_mutex_unlock(outer);
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    wait_byte('g');
    pthread_t thread;
    pthread_create(&thread, NULL, nest_a_b, NULL);
    wait_byte('i');
    atomic_store(&busy, 0);
    pthread_join(thread, NULL);
    wait_byte('c');
    take_in_order(&c, &d);
    take_in_order(&d, &c);
    return 0;
}
