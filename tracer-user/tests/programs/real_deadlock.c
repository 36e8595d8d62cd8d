/* Two threads that really deadlock on two pthread mutexes (each takes one, sleeps, then
 * wants the other), and a third thread that then blocks on one of them: not part of the
 * cycle, blocked behind it. Prints its pid, waits for a byte on stdin, then hangs forever
 * (the test kills it). */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) void transfer_a_to_b(void) {
    pthread_mutex_lock(&lock_a);
    usleep(300000);
    pthread_mutex_lock(&lock_b);
}

__attribute__((noinline)) void transfer_b_to_a(void) {
    pthread_mutex_lock(&lock_b);
    usleep(300000);
    pthread_mutex_lock(&lock_a);
}

__attribute__((noinline)) void audit(void) {
    usleep(600000);
    pthread_mutex_lock(&lock_a);
}

static void *first(void *arg) { (void)arg; transfer_a_to_b(); return NULL; }
static void *second(void *arg) { (void)arg; transfer_b_to_a(); return NULL; }
static void *third(void *arg) { (void)arg; audit(); return NULL; }

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    pthread_t threads[3];
    pthread_create(&threads[0], NULL, first, NULL);
    pthread_create(&threads[1], NULL, second, NULL);
    pthread_create(&threads[2], NULL, third, NULL);
    pthread_join(threads[0], NULL);
    return 0;
}
