"""Model-server adapters: each one a thin file that plugs the video pipeline (``video.pipeline``) into one
server. ``frvsr_handler`` is TorchServe's (the entry point packed into the .mar); a second server's adapter
sits beside it."""
