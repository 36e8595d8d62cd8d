/* A burst of new dependencies: with N mutexes, take every ordered pair (i, j), i < j,
 * nested — N*(N-1)/2 distinct dependencies in a few milliseconds, far more than a tiny
 * ring buffer holds. Waits for a byte on stdin first; lingers after. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define N 48
pthread_mutex_t locks[N];

int main(void) {
    for (int i = 0; i < N; i++) pthread_mutex_init(&locks[i], NULL);
    printf("%d\n", getpid());
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) return 2;
    for (int i = 0; i < N; i++) {
        for (int j = i + 1; j < N; j++) {
            pthread_mutex_lock(&locks[i]);
            pthread_mutex_lock(&locks[j]);
            pthread_mutex_unlock(&locks[j]);
            pthread_mutex_unlock(&locks[i]);
        }
    }
    sleep(1);
    return 0;
}
