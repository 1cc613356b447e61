/*
 * kernels.h: the table of contents of the C post-processing core.
 *
 * Every kernel has the same shape:
 *
 *     eng_status eng_<op>_<dtype>(const eng_<op>_args *args, int thread_index, int n_threads);
 *
 * It reads the inputs named in its args struct, writes only to the caller-owned outputs (and the
 * scratch the caller sized as documented), allocates nothing and never aborts: a bad argument comes
 * back as an eng_status. Kernels whose work splits by row take rows
 * [thread_index * n_rows / n_threads, (thread_index + 1) * n_rows / n_threads); the others do all
 * of their work on thread 0 and return ENG_STATUS_OK at once on any other thread index.
 *
 * Special values, the same in every kernel that applies a softmax (ELASTIC_REFERENCE.md §2):
 *  - softmax is computed in double with the row maximum subtracted;
 *  - a NaN logit is treated as -inf: probability 0, and it ranks below every other value;
 *  - when the maximum is +inf (or every non-NaN value is -inf) the entries equal to the maximum
 *    share the probability equally and the others get 0 (the limit of a softmax of equal values);
 *  - a row with no non-NaN value gets probability 0 everywhere.
 *  - exp(x - max) below about 2.2e-308 (the smallest normal double) counts as 0;
 *  - exp is kernels/internal.h's polynomial (within 2 ulp of libm); softmax_topk sums it over the row
 *    with AVX2 where the CPU has it, so the last bit of a probability can differ between machines.
 */
#ifndef ENG_KERNELS_H
#define ENG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum eng_status {
    ENG_STATUS_OK = 0,
    ENG_STATUS_BAD_SHAPE = 1,  /* sizes disagree, or an index points outside its array */
    ENG_STATUS_BAD_VALUE = 2,  /* a parameter outside its domain (tag kind, max_answer_length) */
    ENG_STATUS_BAD_THREAD = 3, /* thread_index outside [0, n_threads) */
} eng_status;

/* ---- softmax.c ------------------------------------------------------------------------------ */

typedef struct eng_softmax_rows_args {
    const float *logits; /* [n_rows, n_cols] */
    size_t n_rows;
    size_t n_cols;
    double *probs; /* out [n_rows, n_cols]: the softmax of each row */
} eng_softmax_rows_args;

/* Row-wise softmax. Splits by row. */
eng_status eng_softmax_rows_f32(const eng_softmax_rows_args *args, int thread_index, int n_threads);

typedef struct eng_topk_rows_args {
    const float *logits; /* [n_rows, n_cols]; n_cols < 2^32 */
    size_t n_rows;
    size_t n_cols;
    size_t k;        /* entries per row, k <= n_cols */
    int64_t *indices; /* out [n_rows, k]; also the selection heap while the kernel runs */
    double *probs;    /* out [n_rows, k]: softmax probability of each chosen index */
} eng_topk_rows_args;

/*
 * The k most probable columns of each row's softmax, without sorting the row: a bounded heap of
 * (logit, index) keys that skips each 32-value block with nothing able to enter it. Sorted by
 * logit descending (the probability order; where two different logits round to the same
 * probability the larger logit still comes first), ties go to the lower index, NaN ranks last.
 * Splits by row.
 */
eng_status eng_topk_rows_f32(const eng_topk_rows_args *args, int thread_index, int n_threads);

/* ---- nli.c ---------------------------------------------------------------------------------- */

typedef struct eng_nli_scores_args {
    const float *logits; /* [n_labels, n_classes]: one NLI row per candidate label */
    size_t n_labels;
    size_t n_classes;
    size_t entailment;    /* column of "entailment", < n_classes */
    size_t contradiction; /* column of "contradiction", < n_classes */
    int multi_label;
    double *scores; /* out [n_labels] */
} eng_nli_scores_args;

/*
 * Zero-shot scores (ELASTIC_REFERENCE.md §2.8). multi_label == 0: softmax across labels of the
 * entailment column. multi_label != 0: per label softmax([entailment, contradiction])[0], neutral
 * ignored. Splits by label when multi_label != 0; otherwise all work is on thread 0.
 */
eng_status eng_nli_scores_f32(const eng_nli_scores_args *args, int thread_index, int n_threads);

/* ---- iob.c ---------------------------------------------------------------------------------- */

typedef enum eng_iob_kind {
    ENG_IOB_OUTSIDE = 0, /* the O label */
    ENG_IOB_BEGIN = 1,   /* B- / B_ labels */
    ENG_IOB_INSIDE = 2,  /* I- / I_ labels */
} eng_iob_kind;

typedef struct eng_iob_entity {
    int64_t first_token; /* first token of the entity's first word */
    int64_t last_token;  /* last token of the entity's last word */
    int32_t entity;      /* tag_entity of the label that opened the entity */
    double score;        /* mean of the word scores */
} eng_iob_entity;

typedef struct eng_iob_decode_args {
    const float *logits; /* [n_tokens, n_labels] token-classification logits */
    size_t n_tokens;
    size_t n_labels;
    const int32_t *word_ids;  /* [n_tokens]; < 0 marks a special token */
    const int8_t *tag_kind;   /* [n_labels]; an eng_iob_kind */
    const int32_t *tag_entity; /* [n_labels]; entity-type id (-1 for O) */
    double *scratch;           /* [2 * n_labels] */
    eng_iob_entity *entities;  /* out, room for n_tokens entries */
    size_t *n_entities;        /* out: entries written */
} eng_iob_decode_args;

/*
 * NER decoding (ELASTIC_REFERENCE.md §2.2). Softmax per token; a word is a maximal run of
 * consecutive tokens with the same non-negative word id, and its probability vector is the mean of
 * its tokens'; its label is the first argmax and its score the mean probability there. Entities:
 * every non-O word opens one (an I- word with no B- before it opens one too, as Elasticsearch
 * does); the next word joins it while its label is not a B- label and has the same tag_entity.
 * Entity score = mean of its word scores. Needs n_labels >= 1 when any token has a word id.
 * All work on thread 0.
 */
eng_status eng_iob_decode_f32(const eng_iob_decode_args *args, int thread_index, int n_threads);

/* ---- qa_span.c ------------------------------------------------------------------------------ */

/* The value Elasticsearch gives to every logit that cannot be part of an answer. Exported to Python
 * as engine._kernels.QA_MASKED_LOGIT, which pads the shorter windows when the task stacks them. */
#define ENG_QA_MASKED_LOGIT (-10000.0)

typedef struct eng_qa_span {
    int64_t window;
    int64_t start; /* token index inside the window */
    int64_t end;   /* inclusive */
    double score;  /* start probability * end probability */
} eng_qa_span;

typedef struct eng_qa_spans_args {
    const float *start_logits; /* [n_windows, seq_len] */
    const float *end_logits;   /* [n_windows, seq_len] */
    size_t n_windows;
    size_t seq_len;
    const int64_t *seq2_start; /* [n_windows]; first context token, >= 0 */
    const int64_t *token_size; /* [n_windows]; true length of the window, <= seq_len */
    size_t max_answer_length;  /* >= 1 */
    size_t k;                  /* answers wanted; <= 1 means the single best */
    double *scratch;           /* [2 * seq_len] */
    eng_qa_span *spans;        /* out, room for eng_qa_span_capacity(args) entries */
    size_t *n_spans;           /* out: entries written */
} eng_qa_spans_args;

/*
 * Extractive-QA span search (ELASTIC_REFERENCE.md §2.3). Per window: every logit except index 0
 * and seq2_start <= i < token_size - 1 becomes ENG_QA_MASKED_LOGIT; softmax start and end over the whole row
 * (Elasticsearch writes exp(v - log(sum(exp(v)))); we subtract the maximum inside the log-sum-exp,
 * which is the same value without overflow); start[0] = end[0] = 0. Candidates:
 * seq2_start <= s < token_size, s <= e < min(s + max_answer_length, token_size), score
 * start[s] * end[e]. k <= 1: the best span with score > 0 over all windows, skipping s whose start
 * probability is exactly 0, or nothing when no span scores above 0. k > 1: the k best candidates
 * over all windows. Output best first; equal scores keep scan order (window, start, end).
 * All work on thread 0.
 */
eng_status eng_qa_spans_f32(const eng_qa_spans_args *args, int thread_index, int n_threads);

/* How many spans eng_qa_spans_f32 can write for these args: size the spans buffer with it. */
size_t eng_qa_span_capacity(const eng_qa_spans_args *args);

/* ---- sparse.c ------------------------------------------------------------------------------- */

typedef struct eng_sparse_extract_args {
    const float *weights; /* [n]; n < 2^32 */
    size_t n;
    size_t capacity;  /* room in indices and values: eng_sparse_count_f32(weights, n) is enough */
    int64_t *indices; /* out; also the sort buffer while the kernel runs */
    float *values;    /* out */
    uint64_t *scratch; /* [capacity] */
    size_t *n_out;     /* out: entries written */
} eng_sparse_extract_args;

/*
 * Sparse term weights (ELASTIC_REFERENCE.md §2.6): every index with weight > 0 (so NaN, 0 and
 * negatives are dropped, +inf kept), sorted by weight descending, ties to the lower index.
 * ENG_STATUS_BAD_SHAPE when there are more than capacity of them. All work on thread 0.
 */
eng_status eng_sparse_extract_f32(const eng_sparse_extract_args *args, int thread_index, int n_threads);

/* How many weights are > 0: the output size of eng_sparse_extract_f32. */
size_t eng_sparse_count_f32(const float *weights, size_t n);

#endif /* ENG_KERNELS_H */
