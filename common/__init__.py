"""The project's smallest shared pieces, standard library only: where things are (``common.paths``) and
the one way a file is written (``common.files``: atomically). Every package may import it; it imports none."""
