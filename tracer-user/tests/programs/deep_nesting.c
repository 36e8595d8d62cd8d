/* Deeper than the held-lock stack (48, lockdep's MAX_LOCK_DEPTH): 50 mutexes nested, released
 * innermost first; then one pair, a -> b. The two acquires beyond the stack are counted, and
 * their releases are expected, not unmatched. Waits for a byte on stdin first; lingers after. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define DEPTH 50
static pthread_mutex_t m[DEPTH];
static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER, b = PTHREAD_MUTEX_INITIALIZER;

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    for (int i = 0; i < DEPTH; i++) pthread_mutex_lock(&m[i]);
    for (int i = DEPTH - 1; i >= 0; i--) pthread_mutex_unlock(&m[i]);
    pthread_mutex_lock(&a);
    pthread_mutex_lock(&b);
    pthread_mutex_unlock(&b);
    pthread_mutex_unlock(&a);
    sleep(1);
    return 0;
}
