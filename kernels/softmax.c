/* Softmax and top-k over rows of float32 logits (ELASTIC_REFERENCE.md §2.1, §2.4). */
#include <math.h>

#include "internal.h"

/* Values per block in the top-k scan: a block with nothing that can enter the heap costs a few
 * packed compares and no per-value work; 32 floats are two cache lines. */
#define ENG_TOPK_BLOCK 32

void eng_softmax_inplace_f64(double *x, size_t n) {
    double max = -INFINITY;
    int any_number = 0;
    for (size_t i = 0; i < n; i++) {
        max = x[i] > max ? x[i] : max;
        any_number |= x[i] == x[i];
    }
    if (!any_number) {
        for (size_t i = 0; i < n; i++) {
            x[i] = 0.0;
        }
        return;
    }
    if (ENG_UNLIKELY(isinf(max))) {
        size_t ties = 0;
        for (size_t i = 0; i < n; i++) {
            ties += x[i] == max;
        }
        const double share = 1.0 / (double)ties;
        for (size_t i = 0; i < n; i++) {
            x[i] = x[i] == max ? share : 0.0;
        }
        return;
    }
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        x[i] = eng_exp_nonpos(x[i] - max);
        sum += x[i];
    }
    for (size_t i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

eng_status eng_softmax_rows_f32(const eng_softmax_rows_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    size_t first, last;
    eng_row_range(args->n_rows, thread_index, n_threads, &first, &last);
    const size_t n_cols = args->n_cols;
    for (size_t row = first; row < last; row++) {
        const float *in = args->logits + row * n_cols;
        double *out = args->probs + row * n_cols;
        for (size_t col = 0; col < n_cols; col++) {
            out[col] = (double)in[col];
        }
        eng_softmax_inplace_f64(out, n_cols);
    }
    return ENG_STATUS_OK;
}

/* How many values of the block rank above threshold. Summing the comparisons (rather than OR-ing
 * them or taking a lane-wise max) is what the compiler turns into a short chain of packed compares
 * and subtracts: the top-k scan of 250k logits went from 59 to 40 us. NaN compares false. */
ENG_INLINE int block_count_above(const float *x, float threshold) {
    int count = 0;
    for (int i = 0; i < ENG_TOPK_BLOCK; i++) {
        count += x[i] > threshold;
    }
    return count;
}

/* Sum of exp(x - max) over a row whose maximum is the finite value max, in `lanes` partial sums:
 * one dependency chain per lane lets consecutive exp evaluations share vector registers. */
ENG_INLINE double sum_exp_lanes(const float *row, size_t n, double max, int lanes) {
    double lane[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + (size_t)lanes <= n; i += (size_t)lanes) {
        for (int j = 0; j < lanes; j++) {
            lane[j] += eng_exp_nonpos((double)row[i + j] - max);
        }
    }
    double total = 0.0;
    for (int j = 0; j < lanes; j++) {
        total += lane[j];
    }
    for (; i < n; i++) {
        total += eng_exp_nonpos((double)row[i] - max);
    }
    return total;
}

#if ENG_X86_DISPATCH
/* Eight lanes fill two 256-bit registers; with only SSE2's sixteen 128-bit registers they spill, so
 * the baseline keeps four. Measured on the 250k-logit fill_mask row: 950 us (SSE2, 4 lanes), 385 us
 * (AVX2, 8 lanes). */
__attribute__((target("avx2"))) static double sum_exp_avx2(const float *row, size_t n, double max) {
    return sum_exp_lanes(row, n, max, 8);
}
#endif

/* The vocabulary-wide part of softmax_topk: its cost, not the selection, sets fill_mask's speed. */
static double sum_exp(const float *row, size_t n, double max) {
#if ENG_X86_DISPATCH
    if (__builtin_cpu_supports("avx2")) {
        return sum_exp_avx2(row, n, max);
    }
#endif
    return sum_exp_lanes(row, n, max, 4);
}

/* Leaves the keys of the k best entries of row in heap, sorted best first. k >= 1. */
static void select_top(const float *row, size_t n, size_t k, uint64_t *heap) {
    for (size_t i = 0; i < k; i++) {
        heap[i] = eng_rank_key(row[i], i);
    }
    eng_heap_u64_build(heap, k);
    /* Scanning in index order, an entry equal to the root's value has a higher index and loses the
     * tie, so a block can be skipped unless a value in it is strictly above the root's. A NaN root
     * (which any number beats) disables the skipping until a number replaces it. */
    float threshold = row[eng_rank_key_index(heap[0])];
    size_t i = k;
    while (i < n) {
        if (i + ENG_TOPK_BLOCK <= n && threshold == threshold && block_count_above(row + i, threshold) == 0) {
            i += ENG_TOPK_BLOCK;
            continue;
        }
        const size_t end = i + ENG_TOPK_BLOCK < n ? i + ENG_TOPK_BLOCK : n;
        for (; i < end; i++) {
            const uint64_t key = eng_rank_key(row[i], i);
            if (key > heap[0]) {
                heap[0] = key;
                eng_heap_u64_sift_down(heap, k, 0);
                threshold = row[eng_rank_key_index(heap[0])];
            }
        }
    }
    eng_heap_u64_sort_desc(heap, k);
}

/* Softmax probabilities of the chosen indices; best is the row's top value (NaN only when the whole
 * row is NaN, because NaN ranks last). */
static void chosen_probabilities(const float *row, size_t n, size_t k, const int64_t *indices, double *probs) {
    const float best = row[indices[0]];
    if (best != best) {
        for (size_t j = 0; j < k; j++) {
            probs[j] = 0.0;
        }
        return;
    }
    if (ENG_UNLIKELY(isinf(best))) {
        size_t ties = 0;
        for (size_t i = 0; i < n; i++) {
            ties += row[i] == best;
        }
        const double share = 1.0 / (double)ties;
        for (size_t j = 0; j < k; j++) {
            probs[j] = row[indices[j]] == best ? share : 0.0;
        }
        return;
    }
    const double max = (double)best;
    const double sum = sum_exp(row, n, max);
    for (size_t j = 0; j < k; j++) {
        probs[j] = eng_exp_nonpos((double)row[indices[j]] - max) / sum;
    }
}

eng_status eng_topk_rows_f32(const eng_topk_rows_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    if (args->k > args->n_cols || args->n_cols > UINT32_MAX) {
        return ENG_STATUS_BAD_SHAPE;
    }
    const size_t n_cols = args->n_cols;
    const size_t k = args->k;
    if (k == 0) {
        return ENG_STATUS_OK;
    }
    size_t first, last;
    eng_row_range(args->n_rows, thread_index, n_threads, &first, &last);
    for (size_t row = first; row < last; row++) {
        const float *in = args->logits + row * n_cols;
        int64_t *indices = args->indices + row * k;
        /* uint64_t may alias int64_t: the output row doubles as the selection heap. */
        uint64_t *heap = (uint64_t *)indices;
        select_top(in, n_cols, k, heap);
        for (size_t j = 0; j < k; j++) {
            indices[j] = (int64_t)eng_rank_key_index(heap[j]);
        }
        chosen_probabilities(in, n_cols, k, indices, args->probs + row * k);
    }
    return ENG_STATUS_OK;
}
