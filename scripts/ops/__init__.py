"""The use cases: what each task does, over a backend and the infrastructure below."""
