"""Device simulators over real ptys and TCP, with fault injection."""
