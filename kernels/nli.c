/* Zero-shot classification scores from NLI logits (ELASTIC_REFERENCE.md §2.8). */
#include "internal.h"

eng_status eng_nli_scores_f32(const eng_nli_scores_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    if (args->entailment >= args->n_classes || args->contradiction >= args->n_classes) {
        return ENG_STATUS_BAD_SHAPE;
    }
    const size_t n_classes = args->n_classes;
    if (args->multi_label) {
        size_t first, last;
        eng_row_range(args->n_labels, thread_index, n_threads, &first, &last);
        for (size_t label = first; label < last; label++) {
            const float *row = args->logits + label * n_classes;
            double pair[2] = {(double)row[args->entailment], (double)row[args->contradiction]};
            eng_softmax_inplace_f64(pair, 2);
            args->scores[label] = pair[0];
        }
        return ENG_STATUS_OK;
    }
    /* One softmax across all labels: it does not split, so thread 0 does it. */
    if (thread_index != 0) {
        return ENG_STATUS_OK;
    }
    for (size_t label = 0; label < args->n_labels; label++) {
        args->scores[label] = (double)args->logits[label * n_classes + args->entailment];
    }
    eng_softmax_inplace_f64(args->scores, args->n_labels);
    return ENG_STATUS_OK;
}
