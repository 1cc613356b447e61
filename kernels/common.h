/* Shared macros for the kernels: nothing here knows about Python. */
#ifndef ENG_COMMON_H
#define ENG_COMMON_H

#include <assert.h>

/* Branch hints for the rare paths (special values, errors) so the hot loops stay straight. */
#if defined(__GNUC__) || defined(__clang__)
#define ENG_LIKELY(x) __builtin_expect(!!(x), 1)
#define ENG_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define ENG_LIKELY(x) (x)
#define ENG_UNLIKELY(x) (x)
#endif

/* Small helpers used inside hot loops; static so each kernel file gets its own inlinable copy. */
#define ENG_INLINE static inline

/* Invariant checks that cost time: compiled only into debug builds (NDEBUG unset), never abort in Release. */
#ifdef NDEBUG
#define ENG_ASSERT(x) ((void)0)
#else
#define ENG_ASSERT(x) assert(x)
#endif

/* Whether a hot loop may also be compiled for AVX2 (the target attribute) and picked at run time
 * with __builtin_cpu_supports: x86-64 with GCC or Clang. Wheels keep the baseline ISA everywhere
 * else, and there -march is never raised (the wheel must run on any x86-64). */
#ifndef ENG_X86_DISPATCH /* -DENG_X86_DISPATCH=0 builds the baseline-only kernels the C tests also run */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ENG_X86_DISPATCH 1
#else
#define ENG_X86_DISPATCH 0
#endif
#endif

#endif /* ENG_COMMON_H */
