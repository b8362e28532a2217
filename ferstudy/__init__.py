"""ferstudy: a reproducible study of CNN architectures for facial emotion recognition (FER2013)."""

__version__ = "0.1.0"

CLASS_NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SPLIT_NAMES = ["Training", "PublicTest", "PrivateTest"]
IMAGE_SIZE = 48
