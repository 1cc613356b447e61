"""Fuzz harnesses (atheris): the C kernels under ASan+UBSan, the HTTP/Elasticsearch parsers, tokenisation.

See fuzz/README.md for the short CI run and the long run."""
