/* Two global mutexes taken by two threads, one after the other (never a real hang).
 * Mode (argv[1]): abba = opposite orders; ordered = same order; trylock = the second
 * thread takes B then *tries* A; nested3 = one thread nests A, B, C; recursive = a
 * recursive mutex R taken twice, B under both, C under the outer one only, D after. Waits for a byte on stdin before locking, so that the
 * tracer can attach first; lingers afterwards so that its stacks can be symbolized. */
#define _GNU_SOURCE /* PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_c = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_d = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static const char *mode;

__attribute__((noinline)) void take_a_then_b(void) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_b);
    pthread_mutex_unlock(&lock_b);
    pthread_mutex_unlock(&lock_a);
}

__attribute__((noinline)) void take_b_then_a(void) {
    pthread_mutex_lock(&lock_b);
    if (strcmp(mode, "trylock") == 0) {
        if (pthread_mutex_trylock(&lock_a) == 0)
            pthread_mutex_unlock(&lock_a);
    } else {
        pthread_mutex_lock(&lock_a);
        pthread_mutex_unlock(&lock_a);
    }
    pthread_mutex_unlock(&lock_b);
}

__attribute__((noinline)) void take_a_b_c(void) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_b);
    pthread_mutex_lock(&lock_c);
    pthread_mutex_unlock(&lock_c);
    pthread_mutex_unlock(&lock_b);
    pthread_mutex_unlock(&lock_a);
}

__attribute__((noinline)) void take_r_recursively(void) {
    pthread_mutex_lock(&lock_r);
    pthread_mutex_lock(&lock_r);
    pthread_mutex_lock(&lock_b);
    pthread_mutex_unlock(&lock_b);
    pthread_mutex_unlock(&lock_r);
    pthread_mutex_lock(&lock_c);
    pthread_mutex_unlock(&lock_c);
    pthread_mutex_unlock(&lock_r);
    pthread_mutex_lock(&lock_d);
    pthread_mutex_unlock(&lock_d);
}

static void *first(void *arg) {
    (void)arg;
    if (strcmp(mode, "nested3") == 0) take_a_b_c();
    else if (strcmp(mode, "recursive") == 0) take_r_recursively();
    else take_a_then_b();
    return NULL;
}
static void *second(void *arg) {
    (void)arg;
    if (strcmp(mode, "recursive") == 0) return NULL;
    if (strcmp(mode, "ordered") == 0 || strcmp(mode, "nested3") == 0) take_a_then_b();
    else take_b_then_a();
    return NULL;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1] : "abba";
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    pthread_t thread;
    pthread_create(&thread, NULL, first, NULL);
    pthread_join(thread, NULL);
    pthread_create(&thread, NULL, second, NULL);
    pthread_join(thread, NULL);
    sleep(1);
    return 0;
}
