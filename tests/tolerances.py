"""The tolerance table (atol, rtol) per dtype for elementwise float results (STYLE.md section 6)."""

TOLERANCES = {
    "float32": (1e-5, 1.3e-6),
    "float16": (1e-3, 1e-3),
    "bfloat16": (1e-3, 1.6e-2),
}
