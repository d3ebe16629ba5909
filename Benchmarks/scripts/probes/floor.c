// The durability floor in C (brokerbench floor does the same in Swift): back-to-back cycles of one WRITE-byte write
// and an fdatasync over 512 MiB of synced zeros for SECONDS, then, for records arriving evenly, the share whose wait
// until durable (the end of the first cycle starting after they arrive) exceeds 0.5-5 ms. Run beside burn.c (two
// busy threads) and under `chrt -f 10` for docs/BENCHMARKS.md round 28, items 1 and 4:
//
//   cc -O2 floor.c -o floor && cc -O2 burn.c -o burn
//   ./floor 30 50000                                                       # the disk alone
//   ./burn 400 100 32 & ./burn 400 100 32 & sleep 0.3; ./floor 30 16384; wait           # beside two busy threads
//   ./burn 400 100 32 & ./burn 400 100 32 & sleep 0.3; chrt -f 10 ./floor 30 16384; wait  # the cycle at SCHED_FIFO
//
//   ./floor SECONDS WRITE [FILE]: FILE defaults to /tmp/floor.tmp (put it on the broker's data file system); it
// is left for the next run.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
// Back-to-back write+fdatasync cycles (a log under group commit), then: for arrivals uniform in time, the share whose
// wait until durable (end of the first cycle that starts after they arrive) exceeds each threshold.
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){
  double dur=atof(v[1]); long wsz=atol(v[2]);
  int fd=open((c>3?v[3]:"/tmp/floor.tmp"),O_CREAT|O_RDWR|O_TRUNC,0644);
  char*z=calloc(1,1<<20); for(int i=0;i<512;i++) write(fd,z,1<<20); fdatasync(fd);
  char*buf=malloc(wsz); memset(buf,'x',wsz); long off=0;
  long cap=(long)(dur*20000)+10; double*st=malloc(cap*sizeof(double)),*en=malloc(cap*sizeof(double)); long n=0;
  double t0=now(), end=t0+dur;
  while(n<cap){ double t=now(); if(t>end) break; st[n]=t; pwrite(fd,buf,wsz,off); off+=wsz; if(off+wsz>(512L<<20)) off=0; fdatasync(fd); en[n]=now(); n++; }
  double th[]={0.0005,0.001,0.0015,0.0017,0.002,0.003,0.005};
  // arrival in [st[i-1], st[i]) is durable at en[i]; wait = en[i]-t for t in that interval: uniform over [en[i]-st[i], en[i]-st[i-1]]
  printf("%ld cycles in %.1f s, mean cycle %.0f us, write %ld B\n", n, st[n-1]-st[0], (st[n-1]-st[0])/n*1e6, wsz);
  for(int k=0;k<7;k++){ double late=0,total=0; for(long i=1;i<n;i++){ double a=en[i]-st[i], b=en[i]-st[i-1]; total+=b-a; if(b>th[k]) late+= b-(a>th[k]?a:th[k]); }
    printf("  wait > %.1f ms: %.3f%%\n", th[k]*1e3, 100*late/total); }
}
