"""TorchServe side of the product: the FRVSR handler and the small modules it is made of.

``frvsr_handler`` (the entry point packed into the .mar), ``payload`` (request body), ``settings``
(limits and encoder choices from model-config.yaml), ``video`` (PyAV decode/encode), ``pipeline`` (streaming threads).
"""
