/* LD_PRELOAD helper for record.sh: snapshots /proc/self/maps when the program starts (after the
 * dynamic loader, before main) and when it exits, and marks both moments in the strace output with
 * an munmap that always fails (length 0), so record.sh can cut the trace between them.
 * Raw system calls and a static buffer only: malloc or stdio would change the maps being recorded. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static char buf[1 << 20];

static void snapshot(const char *var) {
    const char *out = getenv(var);
    if (!out) return;
    long n = 0, r;
    int in = syscall(SYS_open, "/proc/self/maps", O_RDONLY);
    if (in < 0) return;
    while ((r = syscall(SYS_read, in, buf + n, sizeof(buf) - n)) > 0) n += r;
    syscall(SYS_close, in);
    int fd = syscall(SYS_open, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    syscall(SYS_write, fd, buf, n);
    syscall(SYS_close, fd);
}

__attribute__((constructor)) static void before(void) {
    snapshot("REPLAY_BEFORE");
    syscall(SYS_munmap, (void *)0x5eed000, 0); /* start marker */
}

__attribute__((destructor)) static void after(void) {
    syscall(SYS_munmap, (void *)0xd0e0000, 0); /* end marker */
    snapshot("REPLAY_AFTER");
}
