"""The domain library of the MobileDet conversion pipeline.

Everything here runs without Airflow: the `mobiledet` CLI, the Airflow operators and the tests
all call the same functions.

Keras flavour: the models are built with tf-keras (Keras 2), not Keras 3. Quantization-aware
training comes from tensorflow-model-optimization, whose `quantize_model` only understands
Keras 2 layers and models; a Keras 3 model would have to be rebuilt for QAT. TensorFlow picks
tf-keras for `tf.keras` when TF_USE_LEGACY_KERAS=1 is set before it is first imported, so it is
set here, at the root of the package, before any submodule can import TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
