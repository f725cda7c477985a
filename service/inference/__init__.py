"""Serving predictions: the model cache, the dynamic batcher, image decoding and body limits.

The routes are in :mod:`service.predict` (the predict table and its dispatch) and
:mod:`service.routes.models`. Nothing in this package imports TensorFlow at
import time: the model cache loads it in a thread when it loads the first model.
"""
