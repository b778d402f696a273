"""Accelerator kernel sources of pyengine, installed as `pyengine.kernels` (never a top-level `kernels`).

    triton/   Triton kernels for the torch backend (pyengine/backends/torch/triton.py registers them)
"""
