/*
 * C-only kernel tests, run by ctest with no interpreter involved (so the sanitizers see only our
 * code): each kernel's contract on small known cases, its error statuses, and for the row-splitting
 * kernels the same answer from 1 thread and from several real threads (TSan: make test-tsan).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels.h"

static int failures = 0;

#define CHECK(cond)                                                                                   \
    do {                                                                                              \
        if (!(cond)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                  \
            failures++;                                                                               \
        }                                                                                             \
    } while (0)

static int close_to(double a, double b, double rel) {
    return fabs(a - b) <= rel * fabs(b) + 1e-300;
}

/* Deterministic pseudo-random logits in [-10, 10] with many ties (xorshift, fixed seed). */
static uint32_t next_random(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void fill_logits(float *out, size_t n, uint32_t seed) {
    uint32_t state = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)((int)(next_random(&state) % 2001) - 1000) / 100.0f;
    }
}

static void test_exp_accuracy(void) {
    double worst = 0.0;
    for (double x = -708.0; x <= 0.0; x += 0.0137) {
        const double rel = fabs(eng_exp_nonpos(x) - exp(x)) / exp(x);
        worst = rel > worst ? rel : worst;
    }
    CHECK(worst < 4.5e-16); /* two ulp */
    CHECK(eng_exp_nonpos(0.0) == 1.0);
    CHECK(eng_exp_nonpos(-INFINITY) == 0.0);
    CHECK(eng_exp_nonpos(NAN) == 0.0);
    CHECK(eng_exp_nonpos(-800.0) == 0.0);
}

static void test_softmax_specials(void) {
    double row[4] = {INFINITY, 1.0, INFINITY, NAN};
    eng_softmax_inplace_f64(row, 4);
    CHECK(row[0] == 0.5 && row[1] == 0.0 && row[2] == 0.5 && row[3] == 0.0);
    double nans[2] = {NAN, NAN};
    eng_softmax_inplace_f64(nans, 2);
    CHECK(nans[0] == 0.0 && nans[1] == 0.0);
}

typedef struct thread_job {
    const void *args;
    int thread_index;
    int n_threads;
    eng_status (*run)(const void *args, int thread_index, int n_threads);
    eng_status status;
} thread_job;

static eng_status run_topk(const void *args, int thread_index, int n_threads) {
    return eng_topk_rows_f32(args, thread_index, n_threads);
}

static eng_status run_rows(const void *args, int thread_index, int n_threads) {
    return eng_softmax_rows_f32(args, thread_index, n_threads);
}

static void *thread_main(void *arg) {
    thread_job *job = arg;
    job->status = job->run(job->args, job->thread_index, job->n_threads);
    return NULL;
}

static void run_threads(eng_status (*run)(const void *, int, int), const void *args, int n_threads) {
    pthread_t threads[8];
    thread_job jobs[8];
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (thread_job){args, t, n_threads, run, ENG_STATUS_BAD_THREAD};
        CHECK(pthread_create(&threads[t], NULL, thread_main, &jobs[t]) == 0);
    }
    for (int t = 0; t < n_threads; t++) {
        pthread_join(threads[t], NULL);
        CHECK(jobs[t].status == ENG_STATUS_OK);
    }
}

static void test_rows_split_across_threads(void) {
    enum { N_ROWS = 37, N_COLS = 1025, K = 9 };
    float *logits = malloc(sizeof(float) * N_ROWS * N_COLS);
    int64_t *idx_one = malloc(sizeof(int64_t) * N_ROWS * K), *idx_many = malloc(sizeof(int64_t) * N_ROWS * K);
    double *p_one = malloc(sizeof(double) * N_ROWS * K), *p_many = malloc(sizeof(double) * N_ROWS * K);
    double *rows_one = malloc(sizeof(double) * N_ROWS * N_COLS);
    double *rows_many = malloc(sizeof(double) * N_ROWS * N_COLS);
    fill_logits(logits, (size_t)N_ROWS * N_COLS, 11);
    eng_topk_rows_args one = {logits, N_ROWS, N_COLS, K, idx_one, p_one};
    eng_topk_rows_args many = {logits, N_ROWS, N_COLS, K, idx_many, p_many};
    CHECK(eng_topk_rows_f32(&one, 0, 1) == ENG_STATUS_OK);
    run_threads(run_topk, &many, 6);
    CHECK(memcmp(idx_one, idx_many, sizeof(int64_t) * N_ROWS * K) == 0);
    CHECK(memcmp(p_one, p_many, sizeof(double) * N_ROWS * K) == 0);
    for (size_t row = 0; row < N_ROWS; row++) {
        for (size_t j = 1; j < K; j++) {
            const float before = logits[row * N_COLS + (size_t)idx_one[row * K + j - 1]];
            const float after = logits[row * N_COLS + (size_t)idx_one[row * K + j]];
            CHECK(before > after || (before == after && idx_one[row * K + j - 1] < idx_one[row * K + j]));
        }
    }
    eng_softmax_rows_args rows1 = {logits, N_ROWS, N_COLS, rows_one};
    eng_softmax_rows_args rows6 = {logits, N_ROWS, N_COLS, rows_many};
    CHECK(eng_softmax_rows_f32(&rows1, 0, 1) == ENG_STATUS_OK);
    run_threads(run_rows, &rows6, 6);
    CHECK(memcmp(rows_one, rows_many, sizeof(double) * N_ROWS * N_COLS) == 0);
    double sum = 0.0;
    for (size_t col = 0; col < N_COLS; col++) {
        sum += rows_one[col];
    }
    CHECK(close_to(sum, 1.0, 1e-12));
    /* Top-k probabilities against a plain libm softmax, whichever exp-sum path the CPU takes. */
    for (size_t row = 0; row < N_ROWS; row++) {
        const float *in = logits + row * N_COLS;
        const double max = in[idx_one[row * K]];
        double total = 0.0;
        for (size_t col = 0; col < N_COLS; col++) {
            total += exp((double)in[col] - max);
        }
        for (size_t j = 0; j < K; j++) {
            CHECK(close_to(p_one[row * K + j], exp((double)in[idx_one[row * K + j]] - max) / total, 1e-13));
        }
    }
    CHECK(eng_topk_rows_f32(&one, 1, 1) == ENG_STATUS_BAD_THREAD);
    one.k = N_COLS + 1;
    CHECK(eng_topk_rows_f32(&one, 0, 1) == ENG_STATUS_BAD_SHAPE);
    free(logits);
    free(idx_one);
    free(idx_many);
    free(p_one);
    free(p_many);
    free(rows_one);
    free(rows_many);
}

static void test_nli(void) {
    const float logits[6] = {0.0f, 9.0f, 0.0f, (float)log(3.0), -9.0f, 0.0f};
    double scores[2];
    eng_nli_scores_args args = {logits, 2, 3, 0, 2, 0, scores};
    CHECK(eng_nli_scores_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(close_to(scores[0], 0.25, 1e-7) && close_to(scores[1], 0.75, 1e-7));
    args.multi_label = 1;
    CHECK(eng_nli_scores_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(scores[0] == 0.5 && close_to(scores[1], 0.75, 1e-7));
    args.contradiction = 3;
    CHECK(eng_nli_scores_f32(&args, 0, 1) == ENG_STATUS_BAD_SHAPE);
}

static void test_iob(void) {
    /* Labels O, B-X, I-X, I-Y; words: I-X (opens), I-X (joins), B-X (splits), I-Y (new type), O. */
    enum { N_TOKENS = 7, N_LABELS = 4 };
    const int word_label[N_TOKENS] = {0, 2, 2, 1, 3, 0, 0};
    const int32_t word_ids[N_TOKENS] = {-1, 0, 1, 2, 3, 4, -1};
    const int8_t kind[N_LABELS] = {ENG_IOB_OUTSIDE, ENG_IOB_BEGIN, ENG_IOB_INSIDE, ENG_IOB_INSIDE};
    const int32_t entity[N_LABELS] = {-1, 0, 0, 1};
    float logits[N_TOKENS * N_LABELS] = {0};
    for (int t = 0; t < N_TOKENS; t++) {
        logits[t * N_LABELS + word_label[t]] = 10.0f;
    }
    double scratch[2 * N_LABELS];
    eng_iob_entity entities[N_TOKENS];
    size_t n_entities = 99;
    eng_iob_decode_args args = {logits, N_TOKENS, N_LABELS, word_ids, kind, entity, scratch, entities, &n_entities};
    CHECK(eng_iob_decode_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(n_entities == 3);
    CHECK(entities[0].first_token == 1 && entities[0].last_token == 2 && entities[0].entity == 0);
    CHECK(entities[1].first_token == 3 && entities[1].last_token == 3 && entities[1].entity == 0);
    CHECK(entities[2].first_token == 4 && entities[2].last_token == 4 && entities[2].entity == 1);
    CHECK(close_to(entities[0].score, exp(10.0) / (exp(10.0) + 3.0), 1e-14));
    const int8_t bad_kind[N_LABELS] = {0, 1, 2, 5};
    args.tag_kind = bad_kind;
    CHECK(eng_iob_decode_f32(&args, 0, 1) == ENG_STATUS_BAD_VALUE);
}

static void test_qa(void) {
    /* [CLS] q [SEP] c c c [SEP]: context 3..5, final SEP at 6. */
    const float start[7] = {0, 50, 0, 0, 4, 0, 50};
    const float end[7] = {0, 50, 0, 0, 0, 4, 50};
    const int64_t seq2_start = 3, token_size = 7;
    double scratch[14];
    eng_qa_span spans[4];
    size_t n_spans = 0;
    eng_qa_spans_args args = {start, end, 1, 7, &seq2_start, &token_size, 15, 1, scratch, spans, &n_spans};
    CHECK(eng_qa_span_capacity(&args) == 1);
    CHECK(eng_qa_spans_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(n_spans == 1 && spans[0].start == 4 && spans[0].end == 5);
    args.k = 4;
    CHECK(eng_qa_span_capacity(&args) == 4);
    CHECK(eng_qa_spans_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(n_spans == 4 && spans[0].start == 4 && spans[0].end == 5);
    for (size_t i = 1; i < n_spans; i++) {
        CHECK(spans[i - 1].score >= spans[i].score);
    }
    args.max_answer_length = 1;
    CHECK(eng_qa_span_capacity(&args) == 4); /* (3,3) (4,4) (5,5) (6,6) */
    args.max_answer_length = 0;
    CHECK(eng_qa_spans_f32(&args, 0, 1) == ENG_STATUS_BAD_VALUE);
    const int64_t too_long = 8;
    args.max_answer_length = 15;
    args.token_size = &too_long;
    CHECK(eng_qa_spans_f32(&args, 0, 1) == ENG_STATUS_BAD_SHAPE);
}

static void test_sparse(void) {
    const float weights[7] = {0.0f, 2.0f, NAN, 0.5f, 2.0f, -1.0f, INFINITY};
    int64_t indices[7];
    float values[7];
    uint64_t scratch[7];
    size_t n_out = 0;
    eng_sparse_extract_args args = {weights, 7, eng_sparse_count_f32(weights, 7), indices, values, scratch, &n_out};
    CHECK(eng_sparse_extract_f32(&args, 0, 1) == ENG_STATUS_OK);
    CHECK(n_out == 4 && eng_sparse_count_f32(weights, 7) == 4);
    CHECK(indices[0] == 6 && indices[1] == 1 && indices[2] == 4 && indices[3] == 3);
    CHECK(values[1] == 2.0f && values[3] == 0.5f);
    CHECK(eng_sparse_extract_f32(&args, 2, 2) == ENG_STATUS_BAD_THREAD);
    args.capacity = 3;
    CHECK(eng_sparse_extract_f32(&args, 0, 1) == ENG_STATUS_BAD_SHAPE);
}

int main(void) {
    test_exp_accuracy();
    test_softmax_specials();
    test_rows_split_across_threads();
    test_nli();
    test_iob();
    test_qa();
    test_sparse();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("all kernel checks passed");
    return 0;
}
