"""The benchmark harness behind `pyengine bench`: generation throughput of pyengine and its peers
(transformers, CTranslate2, llama.cpp, transformers TF/Flax where installed) measured side by side, and
decoding-op timings against transformers' processors. Results are JSONL records with the environment
(CPU, flags, versions, commit), a ratio table against a baseline engine, a PNG chart and an HTML page.

Nothing here is imported by `import pyengine`; engines import their framework only when started.
"""
