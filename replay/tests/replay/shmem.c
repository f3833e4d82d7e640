// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, a shmem file each in Linux): two regions,
// one split by mprotect and cut by munmap, the other grown by mremap and advised. Fixture
// `shmem`: gcc -O2 -o /tmp/shmem shmem.c && ./record.sh shmem /tmp/shmem
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096

int main(void) {
    int rw = PROT_READ | PROT_WRITE, shared = MAP_SHARED | MAP_ANONYMOUS;
    char *a = mmap(NULL, 16 * PAGE, rw, shared, -1, 0);
    char *b = mmap(NULL, 8 * PAGE, rw, shared, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        return 1;
    memset(a, 1, 16 * PAGE);
    memset(b, 2, 8 * PAGE);
    mprotect(a + 4 * PAGE, 4 * PAGE, PROT_READ);
    munmap(a + 12 * PAGE, 4 * PAGE);
    char *c = mremap(b, 8 * PAGE, 32 * PAGE, MREMAP_MAYMOVE);
    if (c == MAP_FAILED)
        return 1;
    madvise(c, PAGE, MADV_DONTFORK);
    // The shmem object stays 8 pages: the grown tail would fault with SIGBUS.
    c[7 * PAGE] = 3;
    return c[0] == 2 ? 0 : 1;
}
