"""resnet-service core: ResNet models, data, training, evaluation and inference.

A plain library: it imports neither the HTTP service nor the Celery worker.
"""

__version__ = "0.1.0"
