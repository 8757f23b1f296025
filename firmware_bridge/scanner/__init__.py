"""Serial barcode scanners: the line codec (``codec``) and the driver (``driver``)."""
