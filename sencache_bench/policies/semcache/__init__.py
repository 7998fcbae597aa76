"""``semcache``: prompt-semantic-aware caching with a temporal motion metric (SemCache, anonymous ICLR 2026
submission; shared ALGORITHMS.md, "SemCache"). Residual reuse over the block stack, per CFG branch.

PSA, the threshold. On ``l`` text-mixing attention layers (default 15: 5 shallow, 5 middle, 5 deep; all of them
when the model has fewer), at every computed call from the branch's second call on, with Z_in / Z_out the layer
inputs / outputs (video tokens) averaged over the l layers (elementwise, tokens kept; :func:`layer_average`)::

    M_raw = (||Z_out||_F - ||Z_in||_F) / (||Z_in||_F + 1e-8)        M_norm = tanh(M_raw / s_m)
    cos   = <Z_in, Z_out> / (||Z_in||_F ||Z_out||_F)                  D_norm = (1 - cos) / 2
    p_s   = alpha * M_norm + beta * D_norm

Which layers "mix text" is model knowledge (``Family.adapters["semcache"]``): Wan and LTX-Video: the
cross-attention ``attn2`` of each block (Z_in its input, Z_out its output); HunyuanVideo: the joint attention of
each dual-stream block; CogVideoX: the joint attention ``attn1`` of each block (Z_in / Z_out: the video tokens
entering / leaving that attention; the text tokens are left out).

The error E (Eq. 8)::

    E_t = E_{t-1} + (||O_t - I_t||_1 / ||O_{t-1} - I_{t-1}||_1) * (||O_t - O_{t-1}||_1 / ||I_t - I_{t-1}||_1)

(:func:`eq8_rate` is the increment). Two readings (``error``):

- ``paper`` (default): as the paper writes it. I and O are the model's input latent and its output (the
  sentence after Eq. 8), t and t-1 consecutive calls of the branch; Algorithm 1's order: test ``E < p_s``; if
  it holds, REUSE and then add this step's increment against the previous call (the reused call's O is the
  transformer's output built from the cached residual at the current t); otherwise COMPUTE and ``E = 0``.
  Image-to-video (Wan 2.1 I2V: 16 noisy + 20 conditioning input channels): I is the noisy latents only, as the
  family adapter's ``noisy_latents`` gives them (the conditioning never changes, and O has 16 channels).
- ``relative`` (ours, not in the paper: an EasyCache-style runtime estimator): I / O are the block stack's input
  and output (video tokens); the rate ``rate_r`` of Eq. 8 is measured at each computed call against the
  previous computed one (true tensors both), and a candidate call adds
  ``rate_r * ||I_t - I_{t-1}||_1 / ||O_r||_1`` (the refresh's rate times the step's relative input change)
  before the test ``E < p_s``. Under residual reuse the stack's ``O_t = I_t + (O_r - I_r)`` makes both factors
  of Eq. 8 identically 1 at a candidate call, so this reading needs the refresh's rate; per-step values are a
  few 1e-2. (Adding ``rate_r`` alone, an earlier ``literal`` reading, gave 1 to 3 per step, above any
  ``p_s <= alpha + beta``: it never reused, so it is gone.)

The first ``warmup`` calls of a branch (at least 1) compute, and so does any call before p_s exists (two
computed calls) and, for ``relative``, the rate. ``alpha = beta = 0`` gives ``p_s = 0`` and never reuses. The
decision trace notes ``score = E`` at the test and ``threshold = p_s``.

TMM, which frames a computed call computes. Per post-patch latent frame f (``frames`` of the family adapter)::

    S_m(f) = ||f_t - f_{t-1}||_2 / (||f_t||_2 + ||f_{t-1}||_2 + 1e-8)
    tau = percentile_{(1 - r) * 100}(S_m)   (numpy's linear percentile); frames with S_m > tau compute

``motion: frames`` (default): f_t, f_{t-1} are consecutive latent frames of the call's input latent (motion
between frames); frame 0 has no predecessor and is always computed, tau is taken over frames 1..F'-1.
Frames whose score exceeds tau strictly compute (as the paper writes it); ``keep_ratio = 1`` computes every
frame, and so does a call where no score exceeds tau (all equal).
``motion: steps``: the same frame at this call and at the branch's previous call. ``r = keep_ratio``.
TMM applies on computed calls after the warm-up; the other frames' tokens LEAVE the block stack: the head block
gathers the kept tokens, every block gets the kept positions' RoPE / mask / per-token inputs (the family's
``select``), and the tail block scatters the result back, the dropped frames taking ``I + cached residual``. The
cached residual is refreshed for the kept tokens only. The recorder notes ``tokens = [kept, all]`` video tokens
per call, which prices the call (:meth:`SemCacheConfig.price_parts` counts the block stack at that token count
with FlopCounterMode, once per distinct count) and gives the effective NFE.

TMM support: Wan, HunyuanVideo (dual- and single-stream blocks; the text tokens always compute), CogVideoX (2B:
absolute positions are embedded before the blocks; 5B / 1.5: RoPE sliced) and LTX-Video. A family without a
``select`` in its adapter refuses ``tmm: true``.

Spec: ``{name: semcache, alpha, beta, s_m, layers, warmup, tmm, keep_ratio, motion, error}``; alpha / beta
default to the family's published pair (Wan 0.2 / 0.8, HunyuanVideo 0.4 / 0.6), other families need both.
Not given by the sources, so defaults of ours: ``s_m = 1``, ``warmup = 2`` (the fewest calls that give p_s),
``keep_ratio = 0.75``, ``motion``; ``error: paper`` is the paper's reading. On a TMM call the hooked layers see
the kept tokens only, so that call's p_s is computed on them.
"""

from .config import SemCacheConfig, count_kept_blocks, describe
from .hooks import (ATTENTION_HOOK, SemBlockHook, SemPolicyHook, TextAttentionHook, apply_semcache,
                    remove_semcache)
from .measures import EPS, direction, eq8_rate, layer_average, magnitude, select_layers, semantic_threshold
from .policy import SemCachePolicy, SemCacheState
from .tmm import TokenSelection, forced_keep_first, forced_keep_frames, frames_to_keep, motion_scores

__all__ = ["ATTENTION_HOOK", "EPS", "SemBlockHook", "SemCacheConfig", "SemCachePolicy", "SemCacheState",
           "SemPolicyHook", "TextAttentionHook", "TokenSelection", "apply_semcache", "count_kept_blocks",
           "describe", "direction", "eq8_rate", "forced_keep_first", "forced_keep_frames", "frames_to_keep",
           "layer_average", "magnitude", "motion_scores", "remove_semcache", "select_layers", "semantic_threshold"]
