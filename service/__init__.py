"""The HTTP service: a FastAPI front door onto core's run records and the workers' queue.

``service.app.create_app`` builds the app; ``python -m service.migrate`` and
``python -m service.keys`` are its two command-line tools. The service never imports the
worker's task modules nor TensorFlow: it enqueues by task name.
"""
