/*
 * engine._kernels: the Python binding of the C post-processing kernels (kernels.h). The only file
 * here that includes Python.h. Every entry point takes the same four steps: parse the arguments,
 * acquire C-contiguous buffers and check their dtype and shape, run the kernel with the GIL
 * released, then release every buffer and build the result, on one exit path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "kernels.h"

/* ---- CPython version shims ------------------------------------------------------------------ */

#if PY_VERSION_HEX < 0x030A0000
#error "engine._kernels needs Python 3.10 or newer (PyModule_AddObjectRef)"
#endif

#if PY_LITTLE_ENDIAN
#define NATIVE_ORDER_CHAR '<'
#else
#define NATIVE_ORDER_CHAR '>'
#endif

/* ---- module state ---------------------------------------------------------------------------- */

typedef struct kernels_state {
    PyObject *numpy_empty; /* numpy.empty, to allocate the arrays we return */
    PyObject *dtype_int64;
    PyObject *dtype_float32;
    PyObject *dtype_float64;
    PyObject *shape_error; /* engine._kernels.ShapeError, a ValueError */
} kernels_state;

static kernels_state *get_state(PyObject *module) {
    return (kernels_state *)PyModule_GetState(module);
}

/* ---- buffers --------------------------------------------------------------------------------- */

typedef struct dtype_spec {
    const char *name;
    const char *codes; /* struct-module format codes that mean this dtype at this itemsize */
    Py_ssize_t itemsize;
} dtype_spec;

static const dtype_spec DTYPE_FLOAT32 = {"float32", "f", 4};
static const dtype_spec DTYPE_FLOAT64 = {"float64", "d", 8};
/* int64 is "l" on LP64 platforms and "q" where long is 32-bit, so the itemsize decides. */
static const dtype_spec DTYPE_INT64 = {"int64", "lq", 8};
static const dtype_spec DTYPE_INT32 = {"int32", "il", 4};
static const dtype_spec DTYPE_INT8 = {"int8", "b", 1};

/* The single format code of a native-order buffer, or '\0' for anything else. */
static char format_code(const char *format) {
    if (format == NULL) {
        return 'B';
    }
    if (*format == '@' || *format == '=' || *format == NATIVE_ORDER_CHAR) {
        format++;
    }
    if (format[0] == '\0' || format[1] != '\0') {
        return '\0';
    }
    return format[0];
}

/*
 * Acquires obj's buffer into view and checks dtype and ndim. On failure sets an exception, leaves
 * view->obj NULL and returns -1; on success the caller owns the view and must release it.
 */
static int acquire_buffer(Py_buffer *view, PyObject *obj, const dtype_spec *dtype, int ndim, int writable,
                          kernels_state *state, const char *func, const char *name) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        view->obj = NULL;
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s(): %s must be a %s array (buffer protocol), not %.200s", func, name,
                         dtype->name, Py_TYPE(obj)->tp_name);
        } else {
            PyErr_Clear();
            PyErr_Format(state->shape_error, "%s(): %s must be a C-contiguous %s array%s", func, name,
                         dtype->name, writable ? " and writable" : "");
        }
        return -1;
    }
    const char code = format_code(view->format);
    if (code == '\0' || strchr(dtype->codes, code) == NULL || view->itemsize != dtype->itemsize) {
        PyErr_Format(state->shape_error, "%s(): %s must be %s, got buffer format '%s' with itemsize %zd", func,
                     name, dtype->name, view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->ndim != ndim) {
        PyErr_Format(state->shape_error, "%s(): %s must be %d-D, got %d-D", func, name, ndim, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A new uninitialised numpy array of ndim 1 (d1 ignored) or 2. */
static PyObject *new_array(kernels_state *state, PyObject *dtype, int ndim, Py_ssize_t d0, Py_ssize_t d1) {
    if (ndim == 1) {
        return PyObject_CallFunction(state->numpy_empty, "(n)O", d0, dtype);
    }
    return PyObject_CallFunction(state->numpy_empty, "(nn)O", d0, d1, dtype);
}

/* Turns a kernel status into an exception: the binding checks shapes first, so what is left is a
 * value the kernel found while scanning (a tag kind, a window bound), described by the caller. */
static void raise_status(kernels_state *state, eng_status status, const char *func, const char *what) {
    if (status == ENG_STATUS_BAD_THREAD) {
        PyErr_Format(PyExc_SystemError, "%s(): kernel called with a bad thread index", func);
        return;
    }
    PyErr_Format(state->shape_error, "%s(): %s", func, what);
}

/* Room for n items of size bytes from the raw allocator (usable without the GIL); at least 1 byte. */
static void *alloc_scratch(size_t n, size_t size) {
    if (n > PY_SSIZE_T_MAX / (size ? size : 1)) {
        PyErr_NoMemory();
        return NULL;
    }
    const size_t bytes = n * size;
    void *memory = PyMem_RawMalloc(bytes > 0 ? bytes : 1);
    if (memory == NULL) {
        PyErr_NoMemory();
    }
    return memory;
}

/* ---- softmax_rows ---------------------------------------------------------------------------- */

PyDoc_STRVAR(softmax_rows__doc__,
             "softmax_rows($module, logits)\n"
             "--\n"
             "\n"
             "Softmax of every row, computed in double with the row maximum subtracted.\n"
             "\n"
             "Args:\n"
             "    logits: float32 array [n_rows, n_cols], C-contiguous.\n"
             "\n"
             "Returns:\n"
             "    float64 array [n_rows, n_cols]. NaN counts as -inf (probability 0); where the maximum\n"
             "    is +inf the +inf entries share probability 1; an all-NaN row is all zeros.\n"
             "\n"
             "Raises:\n"
             "    TypeError: logits is not an array. ShapeError (a ValueError): wrong dtype, ndim or\n"
             "    layout.\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> softmax_rows(np.zeros((1, 4), dtype=np.float32)).tolist()\n"
             "[[0.25, 0.25, 0.25, 0.25]]\n");

static PyObject *kernels_softmax_rows(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"logits", NULL};
    kernels_state *state = get_state(module);
    PyObject *logits_obj = NULL;
    PyObject *probs_obj = NULL;
    PyObject *result = NULL;
    Py_buffer logits = {0};
    Py_buffer probs = {0};
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:softmax_rows", keywords, &logits_obj)) {
        goto error;
    }
    if (acquire_buffer(&logits, logits_obj, &DTYPE_FLOAT32, 2, 0, state, "softmax_rows", "logits") < 0) {
        goto error;
    }
    probs_obj = new_array(state, state->dtype_float64, 2, logits.shape[0], logits.shape[1]);
    if (probs_obj == NULL) {
        goto error;
    }
    if (acquire_buffer(&probs, probs_obj, &DTYPE_FLOAT64, 2, 1, state, "softmax_rows", "output") < 0) {
        goto error;
    }
    const eng_softmax_rows_args kernel_args = {
        .logits = logits.buf,
        .n_rows = (size_t)logits.shape[0],
        .n_cols = (size_t)logits.shape[1],
        .probs = probs.buf,
    };
    Py_BEGIN_ALLOW_THREADS
    status = eng_softmax_rows_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK) {
        raise_status(state, status, "softmax_rows", "bad input");
        goto error;
    }
    result = Py_NewRef(probs_obj);
error:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&probs);
    Py_XDECREF(probs_obj);
    return result;
}

/* ---- softmax_topk ---------------------------------------------------------------------------- */

PyDoc_STRVAR(softmax_topk__doc__,
             "softmax_topk($module, logits, k)\n"
             "--\n"
             "\n"
             "The k most probable columns of each row's softmax, found without sorting the row.\n"
             "\n"
             "Args:\n"
             "    logits: float32 array [n_rows, n_cols], C-contiguous; n_cols < 2**32.\n"
             "    k: entries per row; negative means all columns, more than n_cols means n_cols.\n"
             "\n"
             "Returns:\n"
             "    (indices, probs): int64 and float64 arrays [n_rows, k'], k' = n_cols if k < 0 else\n"
             "    min(k, n_cols). Sorted by logit descending (the probability order), ties to the\n"
             "    lower index, NaN last; probabilities as softmax_rows gives them.\n"
             "\n"
             "Raises:\n"
             "    TypeError: logits is not an array or k not an int. ShapeError (a ValueError): wrong\n"
             "    dtype, ndim or layout.\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> indices, probs = softmax_topk(np.array([[0.0, 2.0, 2.0, 1.0]], dtype=np.float32), 2)\n"
             ">>> indices.tolist(), probs.round(4).tolist()\n"
             "([[1, 2]], [[0.3995, 0.3995]])\n");

static PyObject *kernels_softmax_topk(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"logits", "k", NULL};
    kernels_state *state = get_state(module);
    PyObject *logits_obj = NULL;
    PyObject *indices_obj = NULL;
    PyObject *probs_obj = NULL;
    PyObject *result = NULL;
    Py_buffer logits = {0};
    Py_buffer indices = {0};
    Py_buffer probs = {0};
    Py_ssize_t k = 0;
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On:softmax_topk", keywords, &logits_obj, &k)) {
        goto error;
    }
    if (acquire_buffer(&logits, logits_obj, &DTYPE_FLOAT32, 2, 0, state, "softmax_topk", "logits") < 0) {
        goto error;
    }
    const Py_ssize_t n_rows = logits.shape[0];
    const Py_ssize_t n_cols = logits.shape[1];
    if ((size_t)n_cols > UINT32_MAX) {
        PyErr_Format(state->shape_error, "softmax_topk(): logits rows have %zd columns; at most 2**32 - 1 allowed",
                     n_cols);
        goto error;
    }
    const Py_ssize_t kept = (k < 0 || k > n_cols) ? n_cols : k;
    indices_obj = new_array(state, state->dtype_int64, 2, n_rows, kept);
    if (indices_obj == NULL) {
        goto error;
    }
    probs_obj = new_array(state, state->dtype_float64, 2, n_rows, kept);
    if (probs_obj == NULL) {
        goto error;
    }
    if (acquire_buffer(&indices, indices_obj, &DTYPE_INT64, 2, 1, state, "softmax_topk", "output") < 0 ||
        acquire_buffer(&probs, probs_obj, &DTYPE_FLOAT64, 2, 1, state, "softmax_topk", "output") < 0) {
        goto error;
    }
    const eng_topk_rows_args kernel_args = {
        .logits = logits.buf,
        .n_rows = (size_t)n_rows,
        .n_cols = (size_t)n_cols,
        .k = (size_t)kept,
        .indices = indices.buf,
        .probs = probs.buf,
    };
    Py_BEGIN_ALLOW_THREADS
    status = eng_topk_rows_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK) {
        raise_status(state, status, "softmax_topk", "k exceeds the row length");
        goto error;
    }
    result = PyTuple_Pack(2, indices_obj, probs_obj);
error:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&indices);
    PyBuffer_Release(&probs);
    Py_XDECREF(indices_obj);
    Py_XDECREF(probs_obj);
    return result;
}

/* ---- nli_scores ------------------------------------------------------------------------------ */

PyDoc_STRVAR(nli_scores__doc__,
             "nli_scores($module, logits, entailment, contradiction, multi_label)\n"
             "--\n"
             "\n"
             "Zero-shot label scores from NLI logits, one row per candidate label\n"
             "(ELASTIC_REFERENCE.md 2.8).\n"
             "\n"
             "Args:\n"
             "    logits: float32 array [n_labels, n_classes], C-contiguous.\n"
             "    entailment: column of the entailment class.\n"
             "    contradiction: column of the contradiction class.\n"
             "    multi_label: False: softmax across labels of the entailment column. True: per label\n"
             "        softmax([entailment, contradiction])[0] (neutral ignored).\n"
             "\n"
             "Returns:\n"
             "    float64 array [n_labels], in label order (not sorted).\n"
             "\n"
             "Raises:\n"
             "    TypeError: wrong argument types. ShapeError (a ValueError): wrong dtype, ndim or\n"
             "    layout, or a class index outside [0, n_classes).\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> nli_scores(np.array([[1.0, 0.0, 1.0]], dtype=np.float32), 0, 2, True).tolist()\n"
             "[0.5]\n");

static PyObject *kernels_nli_scores(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"logits", "entailment", "contradiction", "multi_label", NULL};
    kernels_state *state = get_state(module);
    PyObject *logits_obj = NULL;
    PyObject *scores_obj = NULL;
    PyObject *result = NULL;
    Py_buffer logits = {0};
    Py_buffer scores = {0};
    Py_ssize_t entailment = 0;
    Py_ssize_t contradiction = 0;
    int multi_label = 0;
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Onnp:nli_scores", keywords, &logits_obj, &entailment,
                                     &contradiction, &multi_label)) {
        goto error;
    }
    if (acquire_buffer(&logits, logits_obj, &DTYPE_FLOAT32, 2, 0, state, "nli_scores", "logits") < 0) {
        goto error;
    }
    const Py_ssize_t n_labels = logits.shape[0];
    const Py_ssize_t n_classes = logits.shape[1];
    if (entailment < 0 || entailment >= n_classes || contradiction < 0 || contradiction >= n_classes) {
        PyErr_Format(state->shape_error,
                     "nli_scores(): entailment (%zd) and contradiction (%zd) must be columns in [0, %zd)",
                     entailment, contradiction, n_classes);
        goto error;
    }
    scores_obj = new_array(state, state->dtype_float64, 1, n_labels, 0);
    if (scores_obj == NULL) {
        goto error;
    }
    if (acquire_buffer(&scores, scores_obj, &DTYPE_FLOAT64, 1, 1, state, "nli_scores", "output") < 0) {
        goto error;
    }
    const eng_nli_scores_args kernel_args = {
        .logits = logits.buf,
        .n_labels = (size_t)n_labels,
        .n_classes = (size_t)n_classes,
        .entailment = (size_t)entailment,
        .contradiction = (size_t)contradiction,
        .multi_label = multi_label,
        .scores = scores.buf,
    };
    Py_BEGIN_ALLOW_THREADS
    status = eng_nli_scores_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK) {
        raise_status(state, status, "nli_scores", "class index out of range");
        goto error;
    }
    result = Py_NewRef(scores_obj);
error:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&scores);
    Py_XDECREF(scores_obj);
    return result;
}

/* ---- iob_decode ------------------------------------------------------------------------------ */

PyDoc_STRVAR(iob_decode__doc__,
             "iob_decode($module, logits, word_ids, tag_kind, tag_entity)\n"
             "--\n"
             "\n"
             "Group NER token logits into entities the way Elasticsearch does (ELASTIC_REFERENCE.md 2.2).\n"
             "\n"
             "Softmax per token; a word is a run of consecutive tokens with the same word id (-1: a\n"
             "special token, skipped) and takes the mean of their probability vectors; its label is the\n"
             "first argmax, its score the mean probability there. Every non-O word opens an entity (an\n"
             "I- word with no B- before it too); the next word joins while its label is not B- and has the\n"
             "same entity id. Entity score = mean of its word scores.\n"
             "\n"
             "Args:\n"
             "    logits: float32 array [n_tokens, n_labels], C-contiguous.\n"
             "    word_ids: int32 array [n_tokens].\n"
             "    tag_kind: int8 array [n_labels]: 0 O, 1 B, 2 I.\n"
             "    tag_entity: int32 array [n_labels]: entity-type id per label (-1 for O).\n"
             "\n"
             "Returns:\n"
             "    list of (first_token, last_token, entity_id, score): first token of the first word and\n"
             "    last token of the last word, in text order.\n"
             "\n"
             "Raises:\n"
             "    TypeError: wrong argument types. ShapeError (a ValueError): wrong dtype, ndim,\n"
             "    layout or lengths, a tag_kind outside 0..2, or no labels for tokens that have words.\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> logits = np.array([[0, 0, 0], [0, 9, 0], [0, 0, 9], [9, 0, 0]], dtype=np.float32)\n"
             ">>> spans = iob_decode(logits, np.array([-1, 0, 1, 2], dtype=np.int32),\n"
             "...                    np.array([0, 1, 2], dtype=np.int8), np.array([-1, 0, 0], dtype=np.int32))\n"
             ">>> [(first, last, entity, round(score, 3)) for first, last, entity, score in spans]\n"
             "[(1, 2, 0, 1.0)]\n");

static PyObject *kernels_iob_decode(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"logits", "word_ids", "tag_kind", "tag_entity", NULL};
    kernels_state *state = get_state(module);
    PyObject *logits_obj = NULL;
    PyObject *word_ids_obj = NULL;
    PyObject *tag_kind_obj = NULL;
    PyObject *tag_entity_obj = NULL;
    PyObject *result = NULL;
    PyObject *list = NULL;
    Py_buffer logits = {0};
    Py_buffer word_ids = {0};
    Py_buffer tag_kind = {0};
    Py_buffer tag_entity = {0};
    double *scratch = NULL;
    eng_iob_entity *entities = NULL;
    size_t n_entities = 0;
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:iob_decode", keywords, &logits_obj, &word_ids_obj,
                                     &tag_kind_obj, &tag_entity_obj)) {
        goto error;
    }
    if (acquire_buffer(&logits, logits_obj, &DTYPE_FLOAT32, 2, 0, state, "iob_decode", "logits") < 0 ||
        acquire_buffer(&word_ids, word_ids_obj, &DTYPE_INT32, 1, 0, state, "iob_decode", "word_ids") < 0 ||
        acquire_buffer(&tag_kind, tag_kind_obj, &DTYPE_INT8, 1, 0, state, "iob_decode", "tag_kind") < 0 ||
        acquire_buffer(&tag_entity, tag_entity_obj, &DTYPE_INT32, 1, 0, state, "iob_decode", "tag_entity") < 0) {
        goto error;
    }
    const Py_ssize_t n_tokens = logits.shape[0];
    const Py_ssize_t n_labels = logits.shape[1];
    if (word_ids.shape[0] != n_tokens || tag_kind.shape[0] != n_labels || tag_entity.shape[0] != n_labels) {
        PyErr_Format(state->shape_error,
                     "iob_decode(): logits is [%zd, %zd] (tokens, labels) but word_ids has %zd entries, "
                     "tag_kind %zd and tag_entity %zd",
                     n_tokens, n_labels, word_ids.shape[0], tag_kind.shape[0], tag_entity.shape[0]);
        goto error;
    }
    scratch = alloc_scratch(2 * (size_t)n_labels, sizeof *scratch);
    entities = alloc_scratch((size_t)n_tokens, sizeof *entities);
    if (scratch == NULL || entities == NULL) {
        goto error;
    }
    const eng_iob_decode_args kernel_args = {
        .logits = logits.buf,
        .n_tokens = (size_t)n_tokens,
        .n_labels = (size_t)n_labels,
        .word_ids = word_ids.buf,
        .tag_kind = tag_kind.buf,
        .tag_entity = tag_entity.buf,
        .scratch = scratch,
        .entities = entities,
        .n_entities = &n_entities,
    };
    Py_BEGIN_ALLOW_THREADS
    status = eng_iob_decode_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK) {
        raise_status(state, status, "iob_decode",
                     status == ENG_STATUS_BAD_VALUE ? "tag_kind values must be 0 (O), 1 (B) or 2 (I)"
                                                    : "logits have no labels but some tokens belong to words");
        goto error;
    }
    list = PyList_New((Py_ssize_t)n_entities);
    if (list == NULL) {
        goto error;
    }
    for (size_t i = 0; i < n_entities; i++) {
        PyObject *item = Py_BuildValue("(LLid)", (long long)entities[i].first_token,
                                       (long long)entities[i].last_token, (int)entities[i].entity,
                                       entities[i].score);
        if (item == NULL) {
            goto error;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    result = Py_NewRef(list);
error:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&word_ids);
    PyBuffer_Release(&tag_kind);
    PyBuffer_Release(&tag_entity);
    PyMem_RawFree(scratch);
    PyMem_RawFree(entities);
    Py_XDECREF(list);
    return result;
}

/* ---- qa_top_spans ---------------------------------------------------------------------------- */

PyDoc_STRVAR(qa_top_spans__doc__,
             "qa_top_spans($module, start, end, seq2_start, token_size, max_answer_length, k)\n"
             "--\n"
             "\n"
             "Best answer spans over all windows of an extractive-QA request (ELASTIC_REFERENCE.md 2.3).\n"
             "\n"
             "Per window, logits outside index 0 and seq2_start <= i < token_size - 1 become QA_MASKED_LOGIT;\n"
             "start and end are softmaxed over the whole row; start[0] = end[0] = 0. Candidates are\n"
             "seq2_start <= s < token_size, s <= e < min(s + max_answer_length, token_size), scored\n"
             "start[s] * end[e].\n"
             "\n"
             "Args:\n"
             "    start, end: float32 arrays [n_windows, seq], C-contiguous; columns past a window's\n"
             "        token_size are ignored (masked).\n"
             "    seq2_start: int64 array [n_windows]: first context token of each window, >= 0.\n"
             "    token_size: int64 array [n_windows]: true token count of each window, <= seq.\n"
             "    max_answer_length: longest answer in tokens, >= 1.\n"
             "    k: answers wanted. k <= 1: the single best span scoring above 0 (or none); k > 1: the\n"
             "        k best candidates over all windows.\n"
             "\n"
             "Returns:\n"
             "    list of (window, start_token, end_token, score), best first; equal scores keep the\n"
             "    scan order (window, start, end). Token indices are positions inside the window.\n"
             "\n"
             "Raises:\n"
             "    TypeError: wrong argument types. ShapeError (a ValueError): wrong dtype, ndim,\n"
             "    layout or lengths, a window bound out of range, or max_answer_length < 1.\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> start = np.array([[0, 0, 0, 5, 0, 0]], dtype=np.float32)\n"
             ">>> end = np.array([[0, 0, 0, 0, 5, 0]], dtype=np.float32)\n"
             ">>> [(w, s, e) for w, s, e, _ in qa_top_spans(start, end, np.array([3]), np.array([6]), 15, 1)]\n"
             "[(0, 3, 4)]\n");

static PyObject *kernels_qa_top_spans(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"start", "end", "seq2_start", "token_size", "max_answer_length", "k", NULL};
    kernels_state *state = get_state(module);
    PyObject *start_obj = NULL;
    PyObject *end_obj = NULL;
    PyObject *seq2_start_obj = NULL;
    PyObject *token_size_obj = NULL;
    PyObject *result = NULL;
    PyObject *list = NULL;
    Py_buffer start = {0};
    Py_buffer end = {0};
    Py_buffer seq2_start = {0};
    Py_buffer token_size = {0};
    Py_ssize_t max_answer_length = 0;
    Py_ssize_t k = 0;
    double *scratch = NULL;
    eng_qa_span *spans = NULL;
    size_t n_spans = 0;
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOnn:qa_top_spans", keywords, &start_obj, &end_obj,
                                     &seq2_start_obj, &token_size_obj, &max_answer_length, &k)) {
        goto error;
    }
    if (acquire_buffer(&start, start_obj, &DTYPE_FLOAT32, 2, 0, state, "qa_top_spans", "start") < 0 ||
        acquire_buffer(&end, end_obj, &DTYPE_FLOAT32, 2, 0, state, "qa_top_spans", "end") < 0 ||
        acquire_buffer(&seq2_start, seq2_start_obj, &DTYPE_INT64, 1, 0, state, "qa_top_spans", "seq2_start") < 0 ||
        acquire_buffer(&token_size, token_size_obj, &DTYPE_INT64, 1, 0, state, "qa_top_spans", "token_size") < 0) {
        goto error;
    }
    const Py_ssize_t n_windows = start.shape[0];
    const Py_ssize_t seq_len = start.shape[1];
    if (end.shape[0] != n_windows || end.shape[1] != seq_len || seq2_start.shape[0] != n_windows ||
        token_size.shape[0] != n_windows) {
        PyErr_Format(state->shape_error,
                     "qa_top_spans(): start is [%zd, %zd] but end is [%zd, %zd], seq2_start has %zd entries "
                     "and token_size %zd",
                     n_windows, seq_len, end.shape[0], end.shape[1], seq2_start.shape[0], token_size.shape[0]);
        goto error;
    }
    if (max_answer_length < 1) {
        PyErr_Format(state->shape_error, "qa_top_spans(): max_answer_length must be at least 1, got %zd",
                     max_answer_length);
        goto error;
    }
    const eng_qa_spans_args sizing = {
        .n_windows = (size_t)n_windows,
        .seq_len = (size_t)seq_len,
        .seq2_start = seq2_start.buf,
        .token_size = token_size.buf,
        .max_answer_length = (size_t)max_answer_length,
        .k = k < 1 ? 1 : (size_t)k,
    };
    const size_t capacity = eng_qa_span_capacity(&sizing);
    scratch = alloc_scratch(2 * (size_t)seq_len, sizeof *scratch);
    spans = alloc_scratch(capacity, sizeof *spans);
    if (scratch == NULL || spans == NULL) {
        goto error;
    }
    eng_qa_spans_args kernel_args = sizing;
    kernel_args.start_logits = start.buf;
    kernel_args.end_logits = end.buf;
    kernel_args.scratch = scratch;
    kernel_args.spans = spans;
    kernel_args.n_spans = &n_spans;
    Py_BEGIN_ALLOW_THREADS
    status = eng_qa_spans_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK) {
        raise_status(state, status, "qa_top_spans",
                     "every window needs seq2_start >= 0 and 0 <= token_size <= the row length");
        goto error;
    }
    list = PyList_New((Py_ssize_t)n_spans);
    if (list == NULL) {
        goto error;
    }
    for (size_t i = 0; i < n_spans; i++) {
        PyObject *item = Py_BuildValue("(LLLd)", (long long)spans[i].window, (long long)spans[i].start,
                                       (long long)spans[i].end, spans[i].score);
        if (item == NULL) {
            goto error;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    result = Py_NewRef(list);
error:
    PyBuffer_Release(&start);
    PyBuffer_Release(&end);
    PyBuffer_Release(&seq2_start);
    PyBuffer_Release(&token_size);
    PyMem_RawFree(scratch);
    PyMem_RawFree(spans);
    Py_XDECREF(list);
    return result;
}

/* ---- sparse_extract -------------------------------------------------------------------------- */

PyDoc_STRVAR(sparse_extract__doc__,
             "sparse_extract($module, weights)\n"
             "--\n"
             "\n"
             "The positive entries of a term-weight vector, heaviest first (ELASTIC_REFERENCE.md 2.6).\n"
             "\n"
             "Args:\n"
             "    weights: float32 array [n], C-contiguous; n < 2**32.\n"
             "\n"
             "Returns:\n"
             "    (indices, values): int64 and float32 arrays [m] of the entries with weight > 0 (NaN,\n"
             "    zero and negative dropped, +inf kept), by weight descending, ties to the lower index.\n"
             "\n"
             "Raises:\n"
             "    TypeError: weights is not an array. ShapeError (a ValueError): wrong dtype, ndim or\n"
             "    layout.\n"
             "\n"
             ">>> import numpy as np\n"
             ">>> indices, values = sparse_extract(np.array([0.5, 0.0, 2.0, -1.0, 0.5], dtype=np.float32))\n"
             ">>> indices.tolist(), values.tolist()\n"
             "([2, 0, 4], [2.0, 0.5, 0.5])\n");

static PyObject *kernels_sparse_extract(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"weights", NULL};
    kernels_state *state = get_state(module);
    PyObject *weights_obj = NULL;
    PyObject *indices_obj = NULL;
    PyObject *values_obj = NULL;
    PyObject *result = NULL;
    Py_buffer weights = {0};
    Py_buffer indices = {0};
    Py_buffer values = {0};
    uint64_t *scratch = NULL;
    size_t n_positive = 0;
    size_t n_out = 0;
    eng_status status = ENG_STATUS_OK;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:sparse_extract", keywords, &weights_obj)) {
        goto error;
    }
    if (acquire_buffer(&weights, weights_obj, &DTYPE_FLOAT32, 1, 0, state, "sparse_extract", "weights") < 0) {
        goto error;
    }
    const Py_ssize_t n = weights.shape[0];
    if ((size_t)n > UINT32_MAX) {
        PyErr_Format(state->shape_error, "sparse_extract(): %zd weights; at most 2**32 - 1 allowed", n);
        goto error;
    }
    /* Counting first sizes the outputs exactly, so the kernel writes straight into them. */
    Py_BEGIN_ALLOW_THREADS
    n_positive = eng_sparse_count_f32(weights.buf, (size_t)n);
    Py_END_ALLOW_THREADS
    scratch = alloc_scratch(n_positive, sizeof *scratch);
    if (scratch == NULL) {
        goto error;
    }
    indices_obj = new_array(state, state->dtype_int64, 1, (Py_ssize_t)n_positive, 0);
    if (indices_obj == NULL) {
        goto error;
    }
    values_obj = new_array(state, state->dtype_float32, 1, (Py_ssize_t)n_positive, 0);
    if (values_obj == NULL) {
        goto error;
    }
    if (acquire_buffer(&indices, indices_obj, &DTYPE_INT64, 1, 1, state, "sparse_extract", "output") < 0 ||
        acquire_buffer(&values, values_obj, &DTYPE_FLOAT32, 1, 1, state, "sparse_extract", "output") < 0) {
        goto error;
    }
    const eng_sparse_extract_args kernel_args = {
        .weights = weights.buf,
        .n = (size_t)n,
        .capacity = n_positive,
        .indices = indices.buf,
        .values = values.buf,
        .scratch = scratch,
        .n_out = &n_out,
    };
    Py_BEGIN_ALLOW_THREADS
    status = eng_sparse_extract_f32(&kernel_args, 0, 1);
    Py_END_ALLOW_THREADS
    if (status != ENG_STATUS_OK || n_out != n_positive) {
        raise_status(state, status, "sparse_extract", "weights changed while being read");
        goto error;
    }
    result = PyTuple_Pack(2, indices_obj, values_obj);
error:
    PyBuffer_Release(&weights);
    PyBuffer_Release(&indices);
    PyBuffer_Release(&values);
    PyMem_RawFree(scratch);
    Py_XDECREF(indices_obj);
    Py_XDECREF(values_obj);
    return result;
}

/* ---- module ---------------------------------------------------------------------------------- */

static PyMethodDef kernels_methods[] = {
    {"softmax_rows", (PyCFunction)(void (*)(void))kernels_softmax_rows, METH_VARARGS | METH_KEYWORDS,
     softmax_rows__doc__},
    {"softmax_topk", (PyCFunction)(void (*)(void))kernels_softmax_topk, METH_VARARGS | METH_KEYWORDS,
     softmax_topk__doc__},
    {"nli_scores", (PyCFunction)(void (*)(void))kernels_nli_scores, METH_VARARGS | METH_KEYWORDS,
     nli_scores__doc__},
    {"iob_decode", (PyCFunction)(void (*)(void))kernels_iob_decode, METH_VARARGS | METH_KEYWORDS,
     iob_decode__doc__},
    {"qa_top_spans", (PyCFunction)(void (*)(void))kernels_qa_top_spans, METH_VARARGS | METH_KEYWORDS,
     qa_top_spans__doc__},
    {"sparse_extract", (PyCFunction)(void (*)(void))kernels_sparse_extract, METH_VARARGS | METH_KEYWORDS,
     sparse_extract__doc__},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(shape_error__doc__,
             "An array passed to a kernel has the wrong dtype, ndim, layout or size, or an index\n"
             "argument is out of range. A ValueError: it signals a caller bug, not bad user text.");

static PyObject *numpy_dtype(PyObject *numpy, const char *name) {
    return PyObject_CallMethod(numpy, "dtype", "s", name);
}

static int kernels_exec(PyObject *module) {
    kernels_state *state = get_state(module);
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (numpy == NULL) {
        return -1;
    }
    state->numpy_empty = PyObject_GetAttrString(numpy, "empty");
    state->dtype_int64 = numpy_dtype(numpy, "int64");
    state->dtype_float32 = numpy_dtype(numpy, "float32");
    state->dtype_float64 = numpy_dtype(numpy, "float64");
    Py_DECREF(numpy);
    if (state->numpy_empty == NULL || state->dtype_int64 == NULL || state->dtype_float32 == NULL ||
        state->dtype_float64 == NULL) {
        return -1;
    }
    state->shape_error =
        PyErr_NewExceptionWithDoc("engine._kernels.ShapeError", shape_error__doc__, PyExc_ValueError, NULL);
    if (state->shape_error == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "ShapeError", state->shape_error) < 0) {
        return -1;
    }
    /* The C contract's constants, so Python never writes its own copy: iob_decode's tag kinds and the
     * logit qa_top_spans masks non-context positions with (kernels/kernels.h). */
    if (PyModule_AddIntConstant(module, "IOB_OUTSIDE", ENG_IOB_OUTSIDE) < 0 ||
        PyModule_AddIntConstant(module, "IOB_BEGIN", ENG_IOB_BEGIN) < 0 ||
        PyModule_AddIntConstant(module, "IOB_INSIDE", ENG_IOB_INSIDE) < 0) {
        return -1;
    }
    PyObject *masked = PyFloat_FromDouble(ENG_QA_MASKED_LOGIT);
    if (masked == NULL) {
        return -1;
    }
    const int added = PyModule_AddObjectRef(module, "QA_MASKED_LOGIT", masked);
    Py_DECREF(masked);
    return added;
}

static int kernels_traverse(PyObject *module, visitproc visit, void *arg) {
    kernels_state *state = get_state(module);
    Py_VISIT(state->numpy_empty);
    Py_VISIT(state->dtype_int64);
    Py_VISIT(state->dtype_float32);
    Py_VISIT(state->dtype_float64);
    Py_VISIT(state->shape_error);
    return 0;
}

static int kernels_clear(PyObject *module) {
    kernels_state *state = get_state(module);
    Py_CLEAR(state->numpy_empty);
    Py_CLEAR(state->dtype_int64);
    Py_CLEAR(state->dtype_float32);
    Py_CLEAR(state->dtype_float64);
    Py_CLEAR(state->shape_error);
    return 0;
}

static void kernels_free(void *module) {
    kernels_clear((PyObject *)module);
}

static PyModuleDef_Slot kernels_slots[] = {
    {Py_mod_exec, (void *)kernels_exec},
#if PY_VERSION_HEX >= 0x030D0000
    /* No mutable state is shared between calls, so free-threaded builds need not re-enable the GIL. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module__doc__,
             "C post-processing kernels: softmax/top-k, NER IOB decoding, NLI scores, QA span search and\n"
             "sparse-weight extraction. Inputs are float32 C-contiguous arrays; the GIL is released while\n"
             "a kernel runs.");

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "engine._kernels",
    .m_doc = module__doc__,
    .m_size = sizeof(kernels_state),
    .m_methods = kernels_methods,
    .m_slots = kernels_slots,
    .m_traverse = kernels_traverse,
    .m_clear = kernels_clear,
    .m_free = kernels_free,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    return PyModuleDef_Init(&kernels_module);
}
