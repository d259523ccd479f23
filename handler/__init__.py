"""TorchServe side of the product: the FRVSR handler and the small modules it is made of.

``frvsr_handler`` (the entry point packed into the .mar), ``payload`` (request body), ``limits``
(settings from model-config.yaml), ``video`` (PyAV decode/encode), ``pipeline`` (streaming threads).
"""
