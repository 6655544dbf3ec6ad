"""Face handling for uploads: offline MTCNN detection (:mod:`.detection`), 5-point alignment to the crop a
backend expects (:mod:`.alignment`) and the upload rules and messages (:mod:`.preparation`)."""

from .alignment import ARCFACE_TEMPLATE_112, FaceCrop, align_face, arcface_template, faceworld_template
from .detection import DetectedFace, FaceDetector, default_detector, detect_faces
from .preparation import FaceError, NoFaceError, PreparedFace, TinyFaceError, prepare_face

__all__ = [
    "ARCFACE_TEMPLATE_112", "DetectedFace", "FaceCrop", "FaceDetector", "FaceError", "NoFaceError", "PreparedFace",
    "TinyFaceError", "align_face", "arcface_template", "default_detector", "detect_faces", "faceworld_template",
    "prepare_face",
]
