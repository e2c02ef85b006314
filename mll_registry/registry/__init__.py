"""Layer 4b, the MLflow registry: tracking, registered labels, the label index, the graph store
and the discovery state (peer of ``hub``)."""
