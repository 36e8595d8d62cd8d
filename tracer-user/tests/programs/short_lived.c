/* Lives a few milliseconds: two threads, one after the other (never a real hang), take two
 * static mutexes in opposite orders, then a heap mutex initialised at one site (a class
 * named by that site) and a third static one in opposite orders; the main thread nests two
 * static mutexes called over a frame pointer into garbage (as the walk from main into
 * libc's start code, which keeps no frame pointer, often reads on into the stack's
 * contents); then it exits at once, with the status given as argv[2] (default 0).
 * Mode (argv[1]): abba = as above, in this process; fork = a forked child does it (the
 * parent only waits, and exits with the child's status); none = no locks at all. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_c = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_d = PTHREAD_MUTEX_INITIALIZER;

struct pair {
    pthread_mutex_t lock;
};

static struct pair *heap_pair;

__attribute__((noinline)) struct pair *make_pair(void) {
    struct pair *pair = malloc(sizeof *pair);
    pthread_mutex_init(&pair->lock, NULL);
    return pair;
}

__attribute__((noinline)) void take_a_then_b(void) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_b);
    pthread_mutex_unlock(&lock_b);
    pthread_mutex_unlock(&lock_a);
}

__attribute__((noinline)) void take_b_then_a(void) {
    pthread_mutex_lock(&lock_b);
    pthread_mutex_lock(&lock_a);
    pthread_mutex_unlock(&lock_a);
    pthread_mutex_unlock(&lock_b);
}

__attribute__((noinline)) void take_pair_then_c(void) {
    pthread_mutex_lock(&heap_pair->lock);
    pthread_mutex_lock(&lock_c);
    pthread_mutex_unlock(&lock_c);
    pthread_mutex_unlock(&heap_pair->lock);
}

__attribute__((noinline)) void take_c_then_pair(void) {
    pthread_mutex_lock(&lock_c);
    pthread_mutex_lock(&heap_pair->lock);
    pthread_mutex_unlock(&heap_pair->lock);
    pthread_mutex_unlock(&lock_c);
}

static void *first(void *arg) {
    (void)arg;
    take_a_then_b();
    take_pair_then_c();
    return NULL;
}

static void *second(void *arg) {
    (void)arg;
    take_b_then_a();
    take_c_then_pair();
    return NULL;
}

/* A frame whose return address is no code address, and whose next frame is none. */
__attribute__((used)) uint64_t garbage_frame[2] = {0, 0x100005671};

/* Calls fn(void) with the frame pointer at garbage_frame: a frame-pointer walk from fn goes
 * through this function's return address, then reads 0x100005671 as the next one. */
void call_over_garbage(void (*fn)(void));
__asm__(".globl call_over_garbage\n"
        ".type call_over_garbage, @function\n"
        "call_over_garbage:\n"
        "  push %rbp\n"
        "  lea garbage_frame(%rip), %rbp\n"
        "  call *%rdi\n"
        "  pop %rbp\n"
        "  ret\n"
        ".size call_over_garbage, .-call_over_garbage\n");

__attribute__((noinline)) void take_a_then_d(void) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_d);
    pthread_mutex_unlock(&lock_d);
    pthread_mutex_unlock(&lock_a);
}

static void inversion(void) {
    pthread_t thread;
    call_over_garbage(take_a_then_d);
    heap_pair = make_pair();
    pthread_create(&thread, NULL, first, NULL);
    pthread_join(thread, NULL);
    pthread_create(&thread, NULL, second, NULL);
    pthread_join(thread, NULL);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "abba";
    int status = argc > 2 ? atoi(argv[2]) : 0;
    if (strcmp(mode, "fork") == 0) {
        pid_t child = fork();
        if (child == 0) {
            inversion();
            _exit(status);
        }
        int child_status;
        if (waitpid(child, &child_status, 0) != child || !WIFEXITED(child_status))
            return 100;
        return WEXITSTATUS(child_status);
    }
    if (strcmp(mode, "abba") == 0)
        inversion();
    return status;
}
