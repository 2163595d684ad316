"""ptune: soft prompt tuning of frozen T5 models in JAX/Flax.

Parameter-efficient prompt tuning after Lester, Al-Rfou and Constant (2021), "The Power of
Scale for Parameter-Efficient Prompt Tuning". Submodules are imported lazily so that the
numerical core (`ptune.models`, `ptune.prompts`, `ptune.checkpoints`, ...) loads without
TensorFlow, seqio or gin.
"""

__version__ = "0.1.0"
