"""The wire protocol, standard library only: what crosses the network between clients, the proxy and the
model server, in one package that every side imports (the proxy without torch, the handler inside the .mar).

- ``wire.contract``: routes, the platform's JSON envelope, ``X-FRVSR-*`` headers, the timing header, sizes.
- ``wire.payload``: a request body -> the video bytes and the output format (``VideoRequest``).
- ``wire.v1``: KServe's v1 protocol: unwrapping a request, one reply function per protocol, reading a reply.
- ``wire.limits``: what one request may contain (``Limits``) and the byte sizes that follow from it.
- ``wire.errors``: the client-fault errors, each with its HTTP status.
- ``wire.cost``: the cost model: seconds per clip and frame, and the time limits (one clip, one request).
"""
