"""Model families, one folder each (config, convert, one modeling file per framework).

`registry.py` is the literal table that maps a config's `model_type` to its classes.
"""
