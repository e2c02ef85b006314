"""Layer 1, the concept graph: WordNet access, concept resolution, graph bundles and their lineage."""
