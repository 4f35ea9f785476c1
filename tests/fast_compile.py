"""The XLA flags of the test suite (no imports: conftest.py sets them before JAX or bnnns load).

``--xla_backend_optimization_level=0``: XLA CPU without LLVM optimisation compiles ~10x faster.
``--xla_cpu_use_fusion_emitters=false``: XLA's older loop emitters for elementwise fusions; the
jitted init of the LNS resnet20 (width 4) compiled in 8.6 s instead of 14.5 s and the birealnet18
one in 6.3 s instead of 11.1 s, the train steps as fast, with the same loss to the last digit
(2-core AMD EPYC, Zen 1, AVX2; 2026-12-04; issue 17); the whole suite 1,360 -> 965 s there, and
two compile-bound tests 80 -> 73 s on a 2-core AVX-512 Xeon (docs/bench.md, "XLA's loop
emitters"). Every compared run in the tests uses the same flags. Benchmarks (bnnns.bench)
and ``helpers.run_optimized`` run without them.
"""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
