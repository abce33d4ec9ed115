"""Generated tail-call shapes: a seed makes a verifier-acceptable program
set (shape.py), a plain-Python model predicts every count (model.py), the
C comes from emit.py, and check.py runs it against the kernel."""
