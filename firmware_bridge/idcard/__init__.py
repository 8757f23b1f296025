"""ID-card readers: the serial adapter protocol (``codec``) and the driver (``driver``)."""
