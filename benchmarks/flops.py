"""Model FLOPs of one train step, counted analytically from the shapes (matmuls only).

MFU = (model FLOPs of a step / median step time) / measured float32 matmul peak. Counting:

- A matmul [m, k] x [k, n] is 2*m*k*n FLOPs. Elementwise work (norms, softmax, GELU, the
  optimizer) is left out, as MFU conventionally does; XLA's own `cost_analysis()['flops']`,
  which counts everything it compiles, is reported beside it as a cross-check.
- Every position of the padded batch is counted (the hardware computes them all): the
  encoder sees batch x (prompt + inputs), the decoder batch x targets.
- Forward F: per encoder layer q, k, v, o projections, scores QK^T and weights x V, and the
  gated MLP (wi_0, wi_1, wo); per decoder layer the same for self-attention, cross-attention
  (q, o on targets; k, v on the encoder output) and the MLP; then the lm_head [d_model, vocab].
  The embedding lookup is a gather, no FLOPs.
- Backward: a projection y = x W has an activation gradient dx = dy W^T (as many FLOPs as
  its forward) and a weight gradient dW = x^T dy (as many again). The attention products
  S = Q K^T and O = P V have no weights but two operand gradients each (dQ and dK; dP and
  dV), so their backward is twice their forward in both kinds of tuning.
- Prompt tuning needs activation gradients all the way down to the encoder input, where the
  prompt sits, and no weight gradients:  F_proj + F_attn + (F_proj + 2 F_attn).
  Model tuning adds the weight gradients: 3 F_proj + 3 F_attn = 3F.
  So the FLOP ratio prompt/model is (2 F_proj + 3 F_attn) / (3 F_proj + 3 F_attn), about 0.67
  when projections dominate: the best the 0.7x target can hope for is about that.
"""

from __future__ import annotations


def forward_flops(cfg) -> dict[str, float]:
    """{'projections': ..., 'attention': ...} forward matmul FLOPs of one batch of
    `workloads.BenchConfig` cfg: projections carry weights, attention products do not."""
    b, le, lt = cfg.batch, cfg.encoder_length, cfg.targets
    d, hd, ff, heads, dk = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, cfg.num_heads, cfg.d_kv
    enc_tokens, dec_tokens = b * le, b * lt
    proj = attn = 0.0
    for _ in range(cfg.num_layers):  # encoder
        proj += 2 * enc_tokens * d * hd * 4  # q, k, v, o
        attn += 2 * 2 * b * heads * le * le * dk  # QK^T and weights x V
        proj += 2 * enc_tokens * d * ff * 3  # wi_0, wi_1, wo
    for _ in range(cfg.num_layers):  # decoder
        proj += 2 * dec_tokens * d * hd * 4  # self-attention q, k, v, o
        attn += 2 * 2 * b * heads * lt * lt * dk
        proj += 2 * dec_tokens * d * hd * 2 + 2 * enc_tokens * d * hd * 2  # cross q, o; k, v
        attn += 2 * 2 * b * heads * lt * le * dk
        proj += 2 * dec_tokens * d * ff * 3
    proj += 2 * dec_tokens * d * cfg.vocab  # lm_head
    return {"projections": proj, "attention": attn}


def step_flops(cfg, kind: str) -> float:
    """Model FLOPs of one train step: kind 'prompt' (activation gradients only) or 'model'
    (activation and weight gradients)."""
    f = forward_flops(cfg)
    forward = f["projections"] + f["attention"]
    activation_grads = f["projections"] + 2 * f["attention"]  # both operands of QK^T, xV
    if kind == "prompt":
        return forward + activation_grads
    if kind == "model":
        return forward + activation_grads + f["projections"]  # + weight gradients
    raise ValueError(f"unknown step kind {kind!r}")
