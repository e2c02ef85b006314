"""MLL Registry: Model Label Learning for open_clip vision-language models.

Label models once on a WordNet concept graph, select the best ones per class of a new task
from text alone, and reuse them as an entropy-weighted ensemble (Tan et al., ICML 2025).
The library is plain Python: no Prefect import anywhere under ``mll_registry``.
"""

__version__ = "0.1.0"
