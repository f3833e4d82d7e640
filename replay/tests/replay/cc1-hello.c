/* The input of the cc1 fixture: ./record.sh cc1 /usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet -O2 cc1-hello.c -o /tmp/hello.s
 * (gcc 12's compiler proper, non-PIE, run alone: no fork or exec to follow). */
int printf(const char *, ...);
static unsigned long fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
struct point { int x, y; };
static int dot(struct point a, struct point b) { return a.x * b.x + a.y * b.y; }
int main(void) {
    struct point p = {3, 4}, q = {5, 6};
    unsigned long sum = 0;
    for (unsigned i = 0; i < 20; i++)
        sum += fib(i);
    printf("hello %lu %d\n", sum, dot(p, q));
    return 0;
}
