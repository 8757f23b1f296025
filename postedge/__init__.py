"""The postedge command line and the demo that wires every part together."""
