"""Gateway service: consumes device streams, validates them and stores them."""
