"""Every numeric tolerance the tests compare with, in one place, each with the reason for its size.

A tolerance is a claim about where two numbers can honestly differ. Written once here, it is one
decision to review and to tighten, and a test that needs a looser one has to say why. Quality bars
(the accuracy and int8 agreement a package must reach) are not tolerances and are not here.

Names say what is compared; ``REL`` is relative, ``ABS`` absolute.
"""

from __future__ import annotations

# ---------------------------------------------------------------- double-precision post-processing

# A closed form one double rounding away from the kernel's result (two-class softmax, equal scores).
ONE_ROUNDING_REL = 1e-15
# A mean of a few doubles (an entity score over three sub-tokens): a few roundings.
FEW_ROUNDINGS_REL = 1e-14
# A C kernel against its plain-Python oracle (tests/kernels/reference.py): the kernels compute exp
# with their own polynomial (kernels/internal.h) and sum in another order than math.fsum; both stay
# within a few ulp, far inside this.
KERNEL_ORACLE_REL = 1e-12
# ... and in absolute terms near zero: the kernels flush exp(x - max) below the smallest normal double
# (2.2e-308) to zero, where the oracle keeps a subnormal.
KERNEL_ORACLE_ABS = 1e-305
# Two candidates closer than this (relative) may swap ranks between kernel and oracle, because of the
# summation order above; property tests skip such draws rather than pin an order neither side defines.
NEAR_TIE_REL = 1e-9
# A kernel against NumPy's own softmax/top-k on the benchmark's inputs: NumPy's pairwise sums and exp
# differ more from ours than the oracle's plain loop does.
KERNEL_NUMPY_REL = 1e-9
KERNEL_NUMPY_ABS = 1e-300
# A closed form whose input was first rounded to float32 (ln 3 as a float32 logit): float32's 2^-24.
FLOAT32_INPUT_REL = 1e-7

# ---------------------------------------------------------------------------------- task results

# finish() on a golden case's fixed logits against the expected result, hand-computed in double or
# copied from Elastic's documentation (which prints ~10 significant digits).
GOLDEN = 1e-9
# finish() against the naive Elasticsearch oracle (tests/golden/es_reference.py) on PyTorch's logits:
# identical maths in double, except text_expansion, whose weights are the shortest decimal that
# round-trips the float32 (ES's Float.toString), up to half a float32 ulp (6e-8) from the double.
TASK_ORACLE = 1e-6

# ----------------------------------------------------------------------------- graphs and models

# Relative max error of an exported fp32 ONNX graph against transformers in PyTorch (both fp32):
# ORT fuses and reorders float32 arithmetic, ~1e-6..1e-4 on real models. The bugs this catches (wrong
# pooling, head, mask or position ids) are errors of 1e-1 and more.
GRAPH_VS_TORCH_REL = 1e-3
# The same comparison on a whole task result (engine.run against PyTorch through the task wrappers):
# the graph's 1e-3 after a softmax or a pooling, which can double it.
RESULT_VS_TORCH = 2e-3
# Relative error above which two outputs are certainly different computations (a prompt applied or
# not): 10x the graph tolerance, so a pass cannot come from float noise.
DIFFERENT_REL = 1e-2
# Absolute difference above which two graphs certainly compute different things (a question tower
# vs the answer tower), on outputs of order 1: 10x what one graph drifts between batch shapes.
DIFFERENT_ABS = 1e-4
# One graph, one input, two batchings (a text alone vs in a padded batch, the server vs engine.load):
# float32 GEMM blocking changes with the batch shape, so outputs of order 1 move by ~1e-6.
SAME_GRAPH_ABS = 1e-5
# A value computed from SAME_GRAPH_ABS vectors (a cosine, a text run alone vs in a batch of longer
# ones, where padding changes the attention sums): the vector error, accumulated.
SAME_GRAPH_DERIVED_ABS = 1e-4
# The deployment tests' fake graph (float32 embedding rows and their mean, in ONNX) against NumPy's
# float32 reference: a mean of ~10 float32 values, a few ulps.
FAKE_GRAPH_REL = 1e-5
FAKE_GRAPH_ABS = 1e-6
# A sentence-transformers documentation value (all-MiniLM-L6-v2's 0.755 for its example pair),
# printed to three digits, from the fp32 package.
DOCUMENTED_COSINE_ABS = 0.01
# ... and from the int8 package engine.run builds by default, whose guard allows a little more drift.
DOCUMENTED_COSINE_INT8_ABS = 0.02
# A fraction of a corpus (accuracy) computed by the engine's fp32 package and by PyTorch: one
# disagreement in a thousand inputs (the fp32 agreement bar is 0.999).
ACCURACY_FRACTION_ABS = 1e-3
# Scores the quantization guard computes in float32 from hand-made vectors (cosines, relative gaps).
GUARD_SCORE_ABS = 1e-6
# The norm of a vector the graph L2-normalised in float32 (768 squares summed): a few float32 ulps.
UNIT_NORM_ABS = 1e-5
