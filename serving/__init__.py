"""Serving plumbing used by client_infer.py: the .mar builder (``archive``), TorchServe's lifecycle
(``torchserve``) and the whole start/serve/stop sequence (``service``)."""
