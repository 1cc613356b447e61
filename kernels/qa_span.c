/* Extractive question answering: the best answer spans over all windows (ELASTIC_REFERENCE.md §2.3). */
#include "internal.h"

/* Start/end probabilities of one window: mask, softmax, then drop CLS (kept only to normalise). */
static void window_probabilities(const float *logits, size_t seq_len, int64_t seq2_start, int64_t token_size,
                                 double *probs) {
    for (size_t i = 0; i < seq_len; i++) {
        const int64_t at = (int64_t)i;
        const int keep = i == 0 || (at >= seq2_start && at < token_size - 1);
        probs[i] = keep ? (double)logits[i] : ENG_QA_MASKED_LOGIT;
    }
    eng_softmax_inplace_f64(probs, seq_len);
    probs[0] = 0.0;
}

/* Is a better than b? Higher score first; equal scores keep scan order (window, start, end). */
ENG_INLINE int span_better(const eng_qa_span *a, const eng_qa_span *b) {
    if (a->score != b->score) {
        return a->score > b->score;
    }
    if (a->window != b->window) {
        return a->window < b->window;
    }
    if (a->start != b->start) {
        return a->start < b->start;
    }
    return a->end < b->end;
}

/* A heap with the worst kept span at the root. */
static void span_sift_down(eng_qa_span *heap, size_t n, size_t i) {
    const eng_qa_span moving = heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && span_better(&heap[child], &heap[child + 1])) {
            child++;
        }
        if (!span_better(&moving, &heap[child])) {
            break;
        }
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = moving;
}

static void span_sift_up(eng_qa_span *heap, size_t i) {
    const eng_qa_span moving = heap[i];
    while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (!span_better(&heap[parent], &moving)) {
            break;
        }
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = moving;
}

/* The candidate ends for start s: s <= e < min(s + max_answer_length, token_size). */
ENG_INLINE int64_t span_end_limit(int64_t start, int64_t token_size, size_t max_answer_length) {
    const int64_t room = token_size - start;
    return start + ((uint64_t)room < max_answer_length ? room : (int64_t)max_answer_length);
}

static int windows_valid(const eng_qa_spans_args *args) {
    for (size_t w = 0; w < args->n_windows; w++) {
        if (args->seq2_start[w] < 0 || args->token_size[w] < 0 || (uint64_t)args->token_size[w] > args->seq_len) {
            return 0;
        }
    }
    return 1;
}

size_t eng_qa_span_capacity(const eng_qa_spans_args *args) {
    if (args->k <= 1) {
        return 1;
    }
    if (!windows_valid(args) || args->max_answer_length == 0) {
        return 0;
    }
    size_t candidates = 0;
    for (size_t w = 0; w < args->n_windows && candidates < args->k; w++) {
        for (int64_t s = args->seq2_start[w]; s < args->token_size[w]; s++) {
            candidates += (size_t)(span_end_limit(s, args->token_size[w], args->max_answer_length) - s);
        }
    }
    return candidates < args->k ? candidates : args->k;
}

eng_status eng_qa_spans_f32(const eng_qa_spans_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    if (thread_index != 0) {
        return ENG_STATUS_OK;
    }
    if (args->max_answer_length == 0) {
        return ENG_STATUS_BAD_VALUE;
    }
    if (!windows_valid(args)) {
        return ENG_STATUS_BAD_SHAPE;
    }
    const size_t seq_len = args->seq_len;
    const size_t capacity = eng_qa_span_capacity(args);
    double *start_probs = args->scratch;
    double *end_probs = args->scratch + seq_len;
    eng_qa_span best = {0, 0, 0, 0.0};
    size_t kept = 0;
    for (size_t w = 0; w < args->n_windows && seq_len > 0; w++) {
        const int64_t seq2_start = args->seq2_start[w];
        const int64_t token_size = args->token_size[w];
        window_probabilities(args->start_logits + w * seq_len, seq_len, seq2_start, token_size, start_probs);
        window_probabilities(args->end_logits + w * seq_len, seq_len, seq2_start, token_size, end_probs);
        for (int64_t s = seq2_start; s < token_size; s++) {
            if (args->k <= 1 && start_probs[s] == 0.0) {
                continue;
            }
            const int64_t end_limit = span_end_limit(s, token_size, args->max_answer_length);
            for (int64_t e = s; e < end_limit; e++) {
                const eng_qa_span candidate = {(int64_t)w, s, e, start_probs[s] * end_probs[e]};
                if (args->k <= 1) {
                    /* Strictly greater: the first best span in scan order wins, and 0.0 never does. */
                    if (candidate.score > best.score) {
                        best = candidate;
                    }
                } else if (kept < capacity) {
                    args->spans[kept] = candidate;
                    span_sift_up(args->spans, kept++);
                } else if (span_better(&candidate, &args->spans[0])) {
                    args->spans[0] = candidate;
                    span_sift_down(args->spans, kept, 0);
                }
            }
        }
    }
    if (args->k <= 1) {
        kept = best.score > 0.0;
        if (kept) {
            args->spans[0] = best;
        }
    } else {
        /* Heap sort: moving the worst to the back each round leaves the best first. */
        for (size_t end = kept; end > 1; end--) {
            const eng_qa_span worst = args->spans[0];
            args->spans[0] = args->spans[end - 1];
            args->spans[end - 1] = worst;
            span_sift_down(args->spans, end - 1, 0);
        }
    }
    *args->n_spans = kept;
    return ENG_STATUS_OK;
}
