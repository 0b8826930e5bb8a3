#ifndef UNET_DIST_MALLOC_COUNTER_H
#define UNET_DIST_MALLOC_COUNTER_H
/// Heap allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) made by
/// any thread of the test process since it started.
long malloc_counter_read(void);
/// 0 where a sanitizer owns the allocator and nothing is counted.
int malloc_counter_active(void);
#endif
