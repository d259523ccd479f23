"""The HTTP front door (``proxy.app``): POST /autotable/predict on port 8080 -> TorchServe, JSON envelope."""
