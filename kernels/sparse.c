/* Sparse term weights: the positive entries, heaviest first (ELASTIC_REFERENCE.md §2.6). */
#include "internal.h"

/* Weights per block in the scan: SPLADE vectors are ~1% positive, so most 32-weight blocks hold
 * none and cost a few packed compares. */
#define ENG_SPARSE_BLOCK 32

/* How many weights of the block are > 0: packed compares and subtracts once vectorised (see
 * block_count_above in softmax.c); NaN compares false and so is dropped, as it should be. */
ENG_INLINE int block_count_positive(const float *x) {
    int count = 0;
    for (int i = 0; i < ENG_SPARSE_BLOCK; i++) {
        count += x[i] > 0.0f;
    }
    return count;
}

size_t eng_sparse_count_f32(const float *weights, size_t n) {
    size_t count = 0;
    size_t i = 0;
    for (; i + ENG_SPARSE_BLOCK <= n; i += ENG_SPARSE_BLOCK) {
        count += (size_t)block_count_positive(weights + i);
    }
    for (; i < n; i++) {
        count += weights[i] > 0.0f;
    }
    return count;
}

eng_status eng_sparse_extract_f32(const eng_sparse_extract_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    if (thread_index != 0) {
        return ENG_STATUS_OK;
    }
    if (args->n > UINT32_MAX) {
        return ENG_STATUS_BAD_SHAPE;
    }
    const float *weights = args->weights;
    /* uint64_t may alias int64_t: the index output doubles as the key buffer for the sort. */
    uint64_t *keys = (uint64_t *)args->indices;
    size_t m = 0;
    size_t i = 0;
    while (i < args->n) {
        if (i + ENG_SPARSE_BLOCK <= args->n && block_count_positive(weights + i) == 0) {
            i += ENG_SPARSE_BLOCK;
            continue;
        }
        const size_t end = i + ENG_SPARSE_BLOCK < args->n ? i + ENG_SPARSE_BLOCK : args->n;
        for (; i < end; i++) {
            if (weights[i] > 0.0f) {
                if (m == args->capacity) {
                    return ENG_STATUS_BAD_SHAPE;
                }
                keys[m++] = eng_rank_key(weights[i], i);
            }
        }
    }
    /* Keys were made in index order and the radix sort is stable, so equal weights keep it. */
    eng_radix_sort_desc_u64(keys, args->scratch, m);
    for (size_t j = 0; j < m; j++) {
        const size_t index = eng_rank_key_index(keys[j]);
        args->indices[j] = (int64_t)index;
        args->values[j] = weights[index];
    }
    *args->n_out = m;
    return ENG_STATUS_OK;
}
