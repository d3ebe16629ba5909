#ifndef BROKERD_CLZ4_SHIM_H
#define BROKERD_CLZ4_SHIM_H
#include <lz4.h>
#endif
