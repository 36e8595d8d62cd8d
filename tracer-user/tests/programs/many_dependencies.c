/* More distinct dependencies than the in-kernel set holds (65,536): N static mutexes (never
 * initialised by a call, so each is a class of its own) nested pairwise along a chain,
 * m[i] -> m[i+1], then one pair inverted, m[K+1] -> m[K]: N dependencies, one real cycle.
 * Waits for a byte on stdin first; lingers after. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define N 100000
#define K 50000
static pthread_mutex_t m[N + 1]; /* all zero: PTHREAD_MUTEX_INITIALIZER on glibc */

static void nest(int outer, int inner) {
    pthread_mutex_lock(&m[outer]);
    pthread_mutex_lock(&m[inner]);
    pthread_mutex_unlock(&m[inner]);
    pthread_mutex_unlock(&m[outer]);
}

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    for (int i = 0; i < N; i++) nest(i, i + 1);
    nest(K + 1, K);
    sleep(1);
    return 0;
}
