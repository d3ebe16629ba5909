// Keeps one core busy for BUSY µs of every BUSY + IDLE µs, for SECONDS (docs/BENCHMARKS.md round 28: two of them at
// 400 and 100 beside floor.c). cc -O2 burn.c -o burn && ./burn 400 100 32
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){ double busy=atof(v[1])/1e6, idle=atof(v[2]); double end=now()+atof(v[3]); volatile long x=0;
 while(now()<end){ double t=now()+busy; while(now()<t) x++; usleep(idle); } }
