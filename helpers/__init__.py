"""Helpers for the transfer-learning workshop kit.

The import rule (checked by ``tests/test_imports.py``):

* Dependencies between the kit's modules go one way: no module imports, directly or
  through others, a module that imports it, not even inside a function. Lower layers
  (``settings``, ``files``, ``download``, ``weights``, ``device``) know nothing of the
  higher ones; a lower module that needs something from above is handed it (the weights
  cache is handed the checksum table of :func:`helpers.backbones.known_md5s`).
* The kit's own modules are imported at the top of each file.
* TensorFlow, Keras and scikit-learn are imported inside the functions that use them:
  Keras reads ``KERAS_HOME`` once, when first imported, so the kit must set it first
  (:func:`helpers.weights.configure_keras_home`), and importing a helpers module must
  stay cheap and do no work. Other heavy, optional packages (matplotlib, ipywidgets,
  nbgrader) follow the same rule to keep ``import helpers.x`` fast.
"""

__version__ = "0.1.0"
