"""The X-ray security machine over TCP: the ``XR1`` line codec and the driver."""
