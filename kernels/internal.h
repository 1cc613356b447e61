/* Helpers shared by the kernel files; not part of the kernel API in kernels.h. */
#ifndef ENG_INTERNAL_H
#define ENG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "kernels.h"

/*
 * exp(x) for x <= 0 (a logit minus its row maximum), 0 for x below -708 (where exp(x) is under the
 * smallest normal double) and for NaN or -inf. Written branch-free with ternaries so the compiler
 * vectorises loops that call it: libm's exp is a call per element, and the fill_mask top-k sums
 * exp over a whole 250k vocabulary (bench/bench_kernels.py). Method: x = n*ln2 + r, |r| <= ln2/2,
 * exp(r) by its Taylor series to degree 13 (truncation error < 1e-17 relative), times 2^n built in
 * the exponent bits. Measured against math.exp: within 2 ulp (tests/kernels/test_softmax.py).
 */
ENG_INLINE double eng_exp_nonpos(double x) {
    const double shifter = 0x1.8p52; /* adding it rounds to an integer held in the low mantissa bits */
    const double log2e = 0x1.71547652b82fep0;
    const double ln2_hi = 0x1.62e42fee00000p-1; /* trailing zero bits: n * ln2_hi is exact */
    const double ln2_lo = 0x1.a39ef35793c76p-33;
    const int keep = x >= -708.0; /* false for NaN and -inf as well */
    const double xc = keep ? x : 0.0;
    const double shifted = xc * log2e + shifter;
    const double n = shifted - shifter;
    const double r = (xc - n * ln2_hi) - n * ln2_lo;
    /* Estrin's scheme: the terms pair up so the dependency chain is 4 multiply-adds deep instead
     * of Horner's 13, which is what lets consecutive elements overlap in the pipeline. */
    const double r2 = r * r;
    const double r4 = r2 * r2;
    const double r8 = r4 * r4;
    const double q0 = 1.0 + r;
    const double q1 = 1.0 / 2.0 + r * (1.0 / 6.0);
    const double q2 = 1.0 / 24.0 + r * (1.0 / 120.0);
    const double q3 = 1.0 / 720.0 + r * (1.0 / 5040.0);
    const double q4 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const double q5 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    const double q6 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    const double p = (q0 + q1 * r2) + (q2 + q3 * r2) * r4 + ((q4 + q5 * r2) + q6 * r4) * r8;
    uint64_t shifted_bits, shifter_bits;
    memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    /* n lies in [-1022, 0], so n + 1023 is a valid biased exponent of a normal double. */
    const uint64_t scale_bits = (shifted_bits - shifter_bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return keep ? p * scale : 0.0;
}

/*
 * A 32-bit key whose unsigned order is the ranking order of float logits: NaN lowest (it counts as
 * -inf and ranks after a real -inf), then -inf ... +inf, with -0.0 equal to +0.0.
 */
ENG_INLINE uint32_t eng_float_rank(float value) {
    if (value != value) {
        return 0;
    }
    if (value == 0.0f) {
        value = 0.0f;
    }
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/*
 * (rank, index) packed into one integer so that a larger key is a better entry and equal values go
 * to the lower index; comparing one uint64 is what keeps the selection loops short. index < 2^32 - 1.
 */
ENG_INLINE uint64_t eng_rank_key(float value, size_t index) {
    return ((uint64_t)eng_float_rank(value) << 32) | (uint64_t)(UINT32_MAX - (uint32_t)index);
}

ENG_INLINE size_t eng_rank_key_index(uint64_t key) {
    return (size_t)(UINT32_MAX - (uint32_t)(key & UINT32_MAX));
}

/* The rows [*first, *last) that thread_index of n_threads owns. */
ENG_INLINE void eng_row_range(size_t n_rows, int thread_index, int n_threads, size_t *first, size_t *last) {
    *first = (size_t)thread_index * n_rows / (size_t)n_threads;
    *last = (size_t)(thread_index + 1) * n_rows / (size_t)n_threads;
}

ENG_INLINE int eng_thread_ok(int thread_index, int n_threads) {
    return n_threads >= 1 && thread_index >= 0 && thread_index < n_threads;
}

/* softmax.c: softmax of x in place, in double, with the special-value rules of kernels.h. */
void eng_softmax_inplace_f64(double *x, size_t n);

/* select.c: a binary min-heap of uint64 keys (the worst kept entry at the root). */
void eng_heap_u64_sift_down(uint64_t *heap, size_t n, size_t i);
void eng_heap_u64_build(uint64_t *heap, size_t n);
/* Turns a min-heap into its keys sorted descending, in place. */
void eng_heap_u64_sort_desc(uint64_t *heap, size_t n);
/* Stable sort of keys by their high 32 bits, descending; scratch holds n keys. */
void eng_radix_sort_desc_u64(uint64_t *keys, uint64_t *scratch, size_t n);

#endif /* ENG_INTERNAL_H */
