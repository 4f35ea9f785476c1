// Work split over XLA's intra-op pool, shared by the native kernels (xnor_conv.cc, conv_dw.cc).
#ifndef BNNNS_NATIVE_PARALLEL_FOR_H_
#define BNNNS_NATIVE_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace bnnns_native {

// Runs fn(chunk) for chunk in [0, chunks) on the caller and the XLA intra-op pool. Chunks are
// claimed from a shared counter, so the caller finishes the work even if no pool thread ever
// starts; late pool tasks find nothing left (the state outlives this call via shared_ptr).
struct Shared {
  std::function<void(int64_t)> fn;
  std::atomic<int64_t> next{0}, done{0};
  int64_t chunks = 0;
  void drain() {
    for (int64_t i; (i = next.fetch_add(1)) < chunks;) {
      fn(i);
      done.fetch_add(1);
    }
  }
};

inline void parallel_for(xla::ffi::ThreadPool& pool, int64_t chunks,
                         std::function<void(int64_t)> fn) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (chunks <= 1 || threads <= 1) {
    for (int64_t i = 0; i < chunks; ++i) fn(i);
    return;
  }
  auto s = std::make_shared<Shared>();
  s->fn = std::move(fn);
  s->chunks = chunks;
  for (int64_t t = 1; t < std::min(threads, chunks); ++t) pool.Schedule([s] { s->drain(); });
  s->drain();
  while (s->done.load() < chunks) std::this_thread::yield();
}

}  // namespace bnnns_native

#endif  // BNNNS_NATIVE_PARALLEL_FOR_H_
