"""Training, prediction and scoring on a built benchmark.

`open_benchmark(path)` is the public way in: the one reader of a benchmark folder (classes,
splits, manifest, shards, a torch dataset of the samples), eval.benchmark_folder.
"""

from eval.benchmark_folder import BenchmarkError, BenchmarkFolder, open_benchmark

__all__ = ["BenchmarkError", "BenchmarkFolder", "open_benchmark"]
