/* NER: token logits -> word tags -> IOB entity groups (ELASTIC_REFERENCE.md §2.2). */
#include "internal.h"

/* An entity being grown word by word. */
typedef struct open_entity {
    int open;
    int64_t first_token;
    int64_t last_token;
    int32_t entity;
    double score_sum;
    size_t n_words;
} open_entity;

static void close_entity(open_entity *current, eng_iob_entity *entities, size_t *n_entities) {
    if (!current->open) {
        return;
    }
    eng_iob_entity *out = &entities[(*n_entities)++];
    out->first_token = current->first_token;
    out->last_token = current->last_token;
    out->entity = current->entity;
    out->score = current->score_sum / (double)current->n_words;
    current->open = 0;
}

eng_status eng_iob_decode_f32(const eng_iob_decode_args *args, int thread_index, int n_threads) {
    if (!eng_thread_ok(thread_index, n_threads)) {
        return ENG_STATUS_BAD_THREAD;
    }
    if (thread_index != 0) {
        return ENG_STATUS_OK;
    }
    const size_t n_tokens = args->n_tokens;
    const size_t n_labels = args->n_labels;
    for (size_t label = 0; label < n_labels; label++) {
        const int8_t kind = args->tag_kind[label];
        if (kind != ENG_IOB_OUTSIDE && kind != ENG_IOB_BEGIN && kind != ENG_IOB_INSIDE) {
            return ENG_STATUS_BAD_VALUE;
        }
    }
    if (n_labels == 0) {
        for (size_t token = 0; token < n_tokens; token++) {
            if (args->word_ids[token] >= 0) {
                return ENG_STATUS_BAD_SHAPE;
            }
        }
    }
    double *token_probs = args->scratch;
    double *word_probs = args->scratch + n_labels;
    open_entity current = {0, 0, 0, 0, 0.0, 0};
    size_t n_entities = 0;
    size_t token = 0;
    while (token < n_tokens) {
        const int32_t word = args->word_ids[token];
        if (word < 0) {
            token++;
            continue;
        }
        /* The word's probability vector: the mean of its tokens' softmax vectors. */
        const size_t first = token;
        for (size_t label = 0; label < n_labels; label++) {
            word_probs[label] = 0.0;
        }
        for (; token < n_tokens && args->word_ids[token] == word; token++) {
            const float *row = args->logits + token * n_labels;
            for (size_t label = 0; label < n_labels; label++) {
                token_probs[label] = (double)row[label];
            }
            eng_softmax_inplace_f64(token_probs, n_labels);
            for (size_t label = 0; label < n_labels; label++) {
                word_probs[label] += token_probs[label];
            }
        }
        const double n_word_tokens = (double)(token - first);
        size_t best = 0;
        for (size_t label = 0; label < n_labels; label++) {
            word_probs[label] /= n_word_tokens;
            if (word_probs[label] > word_probs[best]) {
                best = label;
            }
        }
        const int8_t kind = args->tag_kind[best];
        const int32_t entity = args->tag_entity[best];
        const double score = word_probs[best];
        if (current.open && kind != ENG_IOB_BEGIN && entity == current.entity) {
            current.last_token = (int64_t)(token - 1);
            current.score_sum += score;
            current.n_words++;
            continue;
        }
        close_entity(&current, args->entities, &n_entities);
        if (kind != ENG_IOB_OUTSIDE) {
            current.open = 1;
            current.first_token = (int64_t)first;
            current.last_token = (int64_t)(token - 1);
            current.entity = entity;
            current.score_sum = score;
            current.n_words = 1;
        }
    }
    close_entity(&current, args->entities, &n_entities);
    *args->n_entities = n_entities;
    return ENG_STATUS_OK;
}
