"""One-off studies: measurements that answered a question once and can be rerun (``python -m bench.studies.NAME``),
each writing its result into ``bench/results/``. Neither ``make bench`` nor ``make soak`` runs them; what those run
lives at ``bench/``'s top."""
