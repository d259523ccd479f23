"""What the tests and the bench share, and nothing of the product imports: synthetic clips as real video
files (``testing.clips``), test helpers (``testing.helpers``), ``client_infer.py`` started on free ports
(``testing.launcher``), the running service in tests (``testing.services``) and the browser the page tests
drive (``testing.browser``)."""
