"""soraprep: everything before and around training a Sora-style text-to-video model.

Light on import: heavy libraries (torch, transformers, ray) are imported inside the parts that use them.
"""

__version__ = "0.1.0"
