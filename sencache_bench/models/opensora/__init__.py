"""Open-Sora 1.2 (hpcaitech/Open-Sora): STDiT3, its VAE and rectified-flow sampler, written from the architecture
(no diffusers class, no usable pip package); the family and its registered models are in ``family.py``."""
