/* An everyday mix of kernel work, no module: files (create, write, fsync, rename, unlink,
 * directories), pipes, fork/exec/exit, mmap/munmap (anonymous and file-backed), and TCP
 * over loopback. The kernel's own locking is lockdep-clean upstream, so a tracer that
 * reports a cycle here has a wrong semantic or merged two classes. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void check(int ok, const char *what) {
    if (!ok) { perror(what); exit(1); }
}

static void files(int round) {
    char dir[64], a[96], b[96];
    snprintf(dir, sizeof dir, "/tmp/everyday-%d", round);
    check(mkdir(dir, 0755) == 0, "mkdir");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    int fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    check(fd >= 0, "open");
    char buf[4096];
    memset(buf, round, sizeof buf);
    for (int i = 0; i < 16; i++) check(write(fd, buf, sizeof buf) == sizeof buf, "write");
    check(fsync(fd) == 0, "fsync");
    close(fd);
    check(rename(a, b) == 0, "rename");
    fd = open(b, O_RDONLY);
    check(fd >= 0, "reopen");
    void *map = mmap(NULL, 65536, PROT_READ, MAP_SHARED, fd, 0);
    check(map != MAP_FAILED, "mmap file");
    volatile char sum = 0;
    for (int i = 0; i < 65536; i += 4096) sum += ((char *)map)[i];
    munmap(map, 65536);
    close(fd);
    check(unlink(b) == 0, "unlink");
    check(rmdir(dir) == 0, "rmdir");
}

static void pipes_and_processes(void) {
    int fds[2];
    check(pipe(fds) == 0, "pipe");
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        execl("/bin/busybox", "echo", "hello from exec", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[64];
    check(read(fds[0], line, sizeof line) > 0, "read pipe");
    close(fds[0]);
    int status;
    waitpid(child, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
}

static void memory(void) {
    size_t len = 4 << 20;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(p != MAP_FAILED, "mmap anon");
    for (size_t i = 0; i < len; i += 4096) p[i] = 1;
    check(mprotect(p, len / 2, PROT_READ) == 0, "mprotect");
    check(munmap(p, len) == 0, "munmap");
}

static void loopback_tcp(void) {
    int server = socket(AF_INET, SOCK_STREAM, 0);
    check(server >= 0, "socket");
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    check(bind(server, (struct sockaddr *)&addr, sizeof addr) == 0, "bind");
    socklen_t len = sizeof addr;
    check(getsockname(server, (struct sockaddr *)&addr, &len) == 0, "getsockname");
    check(listen(server, 1) == 0, "listen");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    check(connect(client, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");
    int conn = accept(server, NULL, NULL);
    check(conn >= 0, "accept");
    char msg[256] = "ping";
    check(write(client, msg, sizeof msg) == sizeof msg, "send");
    check(read(conn, msg, sizeof msg) > 0, "recv");
    close(conn);
    close(client);
    close(server);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 10;
    for (int round = 0; round < rounds; round++) {
        files(round);
        pipes_and_processes();
        memory();
        loopback_tcp();
    }
    printf("everyday: %d rounds done\n", rounds);
    return 0;
}
