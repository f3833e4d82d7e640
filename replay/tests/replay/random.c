/* Seeded random memory system calls for measuring the replayer (scripts/replay-random.sh): mmap
 * (anonymous, private and shared file, read-only descriptors, FIXED, NULL, NORESERVE, POPULATE,
 * LOCKED, GROWSDOWN), munmap, mprotect, mremap, madvise, mlock/munlock/mlock2 and pkey_mprotect
 * in a 2 MiB area. Usage: random SEED [CALLS [WRITE]]; WRITE=1 writes the first byte of each new
 * private writable mapping. Build: gcc -O1 -o random random.c */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdint.h>
static uint64_t s;
static uint64_t rnd(void){ s^=s>>12; s^=s<<25; s^=s>>27; return s*0x2545F4914F6CDD1DULL; }
static uint64_t below(uint64_t n){ return rnd()%n; }
int main(int argc,char**argv){
  s = (strtoull(argv[1],0,10)+1)*0x9e3779b97f4a7c15ULL|1;
  int n = argc>2?atoi(argv[2]):100; int touch = argc>3?atoi(argv[3]):0;
  int fd = open("random.file", O_RDWR|O_CREAT, 0644); ftruncate(fd, 64*4096);
  int rofd = open("random.file", O_RDONLY);
  char *base = mmap(0, 512*4096, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  munmap(base, 512*4096);
  unsigned long P=4096;
  for(int i=0;i<n;i++){
    char *a = base + below(512)*P; unsigned long len = (1+below(16))*P;
    int prots[]={0,1,3,3,5,7,2,4}; int prot=prots[below(8)];
    switch(below(10)){
    case 0: case 1: case 2: {
      int fl = below(2)?MAP_PRIVATE:MAP_SHARED; int f=-1; unsigned long off=0;
      if(below(2)){ fl|=MAP_ANONYMOUS; } else { f = below(5)?fd:rofd; off=below(32)*P; }
      if(below(3)) fl|=MAP_FIXED; else if(below(2)) a=0;
      if(!below(8)) fl|=MAP_NORESERVE; if(!below(10)) fl|=MAP_POPULATE; if(!below(15)) fl|=MAP_LOCKED;
      if(!below(20) && (fl&MAP_ANONYMOUS)) fl|=MAP_GROWSDOWN;
      char *r = mmap(a,len,prot,fl,f,off);
      if(touch && r!=MAP_FAILED && (prot&2) && !(fl&MAP_SHARED)) r[0]=1;
      break; }
    case 3: munmap(a,len); break;
    case 4: mprotect(a,len,prot); break;
    case 5: { int fl=below(3); void*na=base+below(512)*P; if(fl==2) fl=3;
      syscall(SYS_mremap,a,len,(1+below(16))*P,fl,na); break; }
    case 6: { int adv[]={0,1,2,3,4,8,9,10,11,12,13,14,15,16,17,18,19,20,22,23}; madvise(a,len,adv[below(20)]); break; }
    case 7: if(below(2)) mlock(a,len); else munlock(a,len); break;
    case 8: syscall(SYS_mlock2,a,len,below(2)); break;
    case 9: syscall(SYS_pkey_mprotect,a,len,prot,0); break;
    }
  }
  return 0;
}
