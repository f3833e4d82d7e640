/* A threaded program for the replay fixtures: two threads share one address space, one unmapping
 * and locking its blocks while the other maps new ones with no address hint, so the kernel hands
 * the second thread the ranges the first just freed, while strace shows the first thread's calls
 * unfinished: the replayer must order them as the kernel did (issue 12).
 * Build: gcc -O2 -pthread -o racing racing.c */
#include <pthread.h>
#include <sys/mman.h>

#define ROUNDS 200
#define PAGE 4096

static char *blocks[ROUNDS];

static void *unmapper(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        char *p = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) continue;
        p[0] = 1;
        mlock(p, 2 * PAGE);
        mprotect(p + PAGE, PAGE, PROT_READ);
        munlock(p, 4 * PAGE);
        munmap(p, 4 * PAGE);
    }
    return NULL;
}

static void *mapper(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        blocks[i] = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (i % 3 == 0 && blocks[i] != MAP_FAILED) munmap(blocks[i], 2 * PAGE);
    }
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, unmapper, NULL);
    pthread_create(&b, NULL, mapper, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
