"""A camera as a barcode reader: frames in, :class:`contracts.ScanBody` out.

``edge.camera.sources`` opens frames (V4L2 device, RTSP/HTTP stream, video file, image
folder), ``edge.camera.decode`` reads barcodes in one image, ``edge.camera.reader`` turns
a stream of frames into scan events. Only the config model is imported here, so the
station config can name a camera without loading OpenCV.
"""

from edge.camera.config import CameraConfig

__all__ = ["CameraConfig"]
