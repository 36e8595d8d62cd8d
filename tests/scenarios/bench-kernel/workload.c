/* Kernel-lock-heavy workload for `cargo xtask bench`: THREADS threads each loop over
 * pipe write+read (pipe->mutex) and epoll_ctl add+del (ep->mtx) for SECONDS seconds, then
 * the total operations per second is printed as `ops_per_s=N`.
 * `./workload progs` instead lists the loaded BPF programs (what `bpftool prog list` shows)
 * with their run counts and run time (kernel.bpf_stats_enabled): the profile of where a
 * tracer's time goes. The clean-exit scenario shares this file (symlink). */
#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static double seconds;
static volatile int stop;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    long *ops = arg;
    int fds[2], ep = epoll_create1(0);
    if (pipe(fds) != 0 || ep < 0) { perror("setup"); exit(1); }
    struct epoll_event ev = { .events = EPOLLIN };
    char byte = 'x';
    while (!stop) {
        if (write(fds[1], &byte, 1) != 1 || read(fds[0], &byte, 1) != 1) { perror("pipe"); exit(1); }
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev);
        epoll_ctl(ep, EPOLL_CTL_DEL, fds[0], NULL);
        *ops += 2;
    }
    close(fds[0]); close(fds[1]); close(ep);
    return NULL;
}

static long bpf(int cmd, union bpf_attr *attr) {
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int list_programs(void) {
    unsigned int id = 0;
    for (;;) {
        union bpf_attr attr;
        struct bpf_prog_info info;
        memset(&attr, 0, sizeof(attr));
        attr.start_id = id;
        if (bpf(BPF_PROG_GET_NEXT_ID, &attr) != 0)
            return errno == ENOENT ? 0 : 1;
        id = attr.next_id;
        memset(&attr, 0, sizeof(attr));
        attr.prog_id = id;
        int fd = bpf(BPF_PROG_GET_FD_BY_ID, &attr);
        if (fd < 0)
            continue;
        memset(&info, 0, sizeof(info));
        memset(&attr, 0, sizeof(attr));
        attr.info.bpf_fd = fd;
        attr.info.info_len = sizeof(info);
        attr.info.info = (unsigned long)&info;
        if (bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0)
            printf("prog=%s run_cnt=%llu run_time_ns=%llu\n", info.name,
                   (unsigned long long)info.run_cnt, (unsigned long long)info.run_time_ns);
        close(fd);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "progs") == 0)
        return list_programs();
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    seconds = argc > 2 ? atof(argv[2]) : 2.0;
    pthread_t tid[64];
    long ops[64] = {0};
    if (threads < 1 || threads > 64) return 2;
    double start = now();
    for (int i = 0; i < threads; i++) pthread_create(&tid[i], NULL, worker, &ops[i]);
    while (now() - start < seconds) usleep(10000);
    stop = 1;
    long total = 0;
    for (int i = 0; i < threads; i++) { pthread_join(tid[i], NULL); total += ops[i]; }
    printf("ops_per_s=%.0f\n", total / (now() - start));
    return 0;
}
