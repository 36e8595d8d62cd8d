/* Two global mutexes taken by two threads, one after the other (never a real hang).
 * Mode (argv[1]): abba = opposite orders; ordered = same order; trylock = the second
 * thread takes B then *tries* A; nested3 = one thread nests A, B, C. Waits for a byte on stdin before locking, so that the
 * tracer can attach first; lingers afterwards so that its stacks can be symbolized. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_c = PTHREAD_MUTEX_INITIALIZER;
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

static void *first(void *arg) {
    (void)arg;
    if (strcmp(mode, "nested3") == 0) take_a_b_c(); else take_a_then_b();
    return NULL;
}
static void *second(void *arg) {
    (void)arg;
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
