// Linked into the test executable, these definitions take the place of glibc's allocator entry
// points for the whole process and count every call, then hand it to glibc's own functions.
// Lets a test assert that a training step allocates nothing.
#include <errno.h>
#include <stddef.h>
#include "MallocCounter.h"

#if defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define UNET_DIST_SANITIZED 1
#  endif
#endif

#ifdef UNET_DIST_SANITIZED
// The sanitizers own the allocator: count nothing and say so.
long malloc_counter_read(void) { return 0; }
int malloc_counter_active(void) { return 0; }
#else
int malloc_counter_active(void) { return 1; }

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static long counter;

static inline void count_one(void) { __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED); }

long malloc_counter_read(void) { return __atomic_load_n(&counter, __ATOMIC_RELAXED); }

void *malloc(size_t n) { count_one(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count_one(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count_one(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count_one(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count_one(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count_one();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
#endif
