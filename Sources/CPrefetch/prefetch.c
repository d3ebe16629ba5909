// Everything is in include/prefetch.h (static inline); a C target needs a source file of its own.
#include "prefetch.h"
