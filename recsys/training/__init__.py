"""Stage-1 training of the encoder: the audio cache, augmentations, the contrastive loss, the run setup, the loop.

Inference (``recsys.embedder``: the encoders, embedding, the active-encoder choice) never imports this package.
"""
