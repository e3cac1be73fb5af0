"""sharelens: why a Chinese social-media post gets shared, and how far it travels.

This package holds only what training and serving share: the label spec, text normalisation,
the model bundle format and the registry. It imports neither `training` nor `serving`.
"""

__version__ = "0.1.0"
