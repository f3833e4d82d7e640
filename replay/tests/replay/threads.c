/* A threaded program for the replay fixtures: four threads allocate through malloc (so glibc
 * creates per-thread arenas: PROT_NONE MAP_NORESERVE reservations, trimmed and made writable
 * piece by piece) and map, protect and unmap memory of their own, all in one address space;
 * then main grows and shrinks one large block with realloc (mremap).
 * Build: gcc -O2 -pthread -o threads threads.c */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *work(void *arg) {
    long id = (long)arg;
    void *keep[16];
    for (int i = 0; i < 16; i++) {
        keep[i] = malloc(4096 * (i + 1) * (id + 1));
        memset(keep[i], 1, 64);
    }
    for (int i = 0; i < 16; i += 2) free(keep[i]);
    char *p = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
        mprotect(p + 4096 * 4, 4096 * 4, PROT_READ);
        munmap(p + 4096 * 12, 4096 * 2);
    }
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    char *big = malloc(1 << 20); /* above the mmap threshold: its own mapping */
    memset(big, 2, 64);
    big = realloc(big, 8 << 20); /* mremap: grow, or move */
    big = realloc(big, 2 << 20); /* mremap: shrink in place */
    free(big);
    return 0;
}
