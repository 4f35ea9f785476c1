// XNOR-popcount binary convolution for the XLA CPU runtime (an XLA FFI custom call).
//
// bnnns_xnor_conv(x: f32[N,H,W,C], w: u32[Cout, 2*L], wpop: s32[Cout, KH*KW])
//   -> s32[N,Ho,Wo,Cout]   with attributes kh, kw, sh, sw, pad_top, pad_left, chunk_work,
//      parallel_work.
//
// sign(x) (bit 1 <=> x >= 0, D10) is packed per pixel along C; for every output position the
// (kh, kw, c) window is gathered into L = ceil(KH*KW*C / 64) words (bit (ky*KW + kx)*C + c,
// little bit order; the weights `w` are packed the same way, two u32 per u64 word) and
//   acc = K_valid - 2 * (sum_i popcount(col_i XOR w_i) - corr),
// where a zero-padded tap contributes 0 bits to col: it adds popcount(w_tap) = wpop[tap] to
// the sum, which corr takes back, and K_valid counts only the taps inside the image. The
// result equals the int8 convolution of sign(x) with the +-1 weights over a zero-padded image
// exactly (int32). AVX2 packs the signs (8 floats per movemask), POPCNT counts; without them
// a portable build of the same loops runs (chosen at run time).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BNNNS_X86 1
#endif

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t n, h, w, c, cout, kh, kw, sh, sw, pad_top, pad_left, ho, wo;
  int64_t cw;         // u64 words per packed pixel
  int64_t l;          // u64 words per packed window
  int64_t row_words;  // u64 words per row stream (padded width, plus one spare word)
};

#ifdef BNNNS_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif
namespace fast {
#define BNNNS_FAST 1
#include "xnor_body.inc"
#undef BNNNS_FAST
}  // namespace fast
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
bool cpu_is_fast() {
  static const bool fast = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  return fast;
}
#else
bool cpu_is_fast() { return false; }
#endif

namespace portable {
#define BNNNS_FAST 0
#include "xnor_body.inc"
#undef BNNNS_FAST
}  // namespace portable

void pack_any(const float* x, uint64_t* p, const Geometry& g, int64_t a, int64_t b) {
#ifdef BNNNS_X86
  if (cpu_is_fast()) return fast::pack_rows(x, p, g, a, b);
#endif
  portable::pack_rows(x, p, g, a, b);
}

void conv_any(const uint64_t* p, const uint64_t* z, const uint64_t* w, const int32_t* wp,
              int32_t* o, const Geometry& g, int64_t a, int64_t b) {
#ifdef BNNNS_X86
  if (cpu_is_fast()) return fast::conv_rows(p, z, w, wp, o, g, a, b);
#endif
  portable::conv_rows(p, z, w, wp, o, g, a, b);
}

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

void parallel_for(ffi::ThreadPool& pool, int64_t chunks, std::function<void(int64_t)> fn) {
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

ffi::Error XnorConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U32> w,
                        ffi::Buffer<ffi::S32> wpop, ffi::ResultBuffer<ffi::S32> out, int64_t kh,
                        int64_t kw, int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                        int64_t chunk_work, int64_t parallel_work) {
  const auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || wd.size() != 2 || od.size() != 4)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: x, out must be 4-D and w 2-D");
  Geometry g{xd[0], xd[1], xd[2], xd[3], od[3], kh,   kw, sh,
             sw,    pad_top, pad_left, od[1], od[2], 0, 0,  0};
  g.cw = (g.c + 63) / 64;
  g.l = (kh * kw * g.c + 63) / 64;
  const int64_t width = std::max(g.pad_left + g.w, (g.wo - 1) * sw + kw);  // padded columns
  g.row_words = (width * g.c + 63) / 64 + 1;
  if (wd[0] != g.cout || wd[1] != 2 * g.l || od[0] != g.n)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: w must be u32[Cout, 2*L]");
  thread_local std::vector<uint64_t> packed, zero_row;
  packed.resize(g.n * g.h * g.row_words);  // every row is zeroed by pack_rows
  zero_row.assign(g.row_words, 0);
  const uint64_t* zp = zero_row.data();
  const float* xp = x.typed_data();
  uint64_t* pp = packed.data();
  const uint64_t* wp = reinterpret_cast<const uint64_t*>(w.typed_data());
  const int32_t* pop = wpop.typed_data();
  int32_t* op = out->typed_data();
  const int64_t in_rows = g.n * g.h, rows = g.n * g.ho;
  // `work` (output value, word) pairs; below parallel_work the whole call stays on the calling
  // thread (a pool hand-off costs more than it saves there: resnet20 at batch 1), above it
  // chunks of ~chunk_work pairs go to the pool
  const int64_t work = rows * g.wo * g.cout * g.l;
  if (chunk_work < 1 || parallel_work < 0)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: chunk_work >= 1, parallel_work >= 0");
  if (work < parallel_work) {
    pack_any(xp, pp, g, 0, in_rows);
    conv_any(pp, zp, wp, pop, op, g, 0, rows);
    return ffi::Error::Success();
  }
  const int64_t chunks = std::clamp<int64_t>(work / chunk_work, 1, 64);
  const int64_t in_chunk = (in_rows + chunks - 1) / chunks;
  parallel_for(pool, chunks, [&, xp, pp](int64_t i) {
    pack_any(xp, pp, g, std::min(in_rows, i * in_chunk), std::min(in_rows, (i + 1) * in_chunk));
  });
  const int64_t row_chunk = (rows + chunks - 1) / chunks;
  parallel_for(pool, chunks, [&, pp, zp, wp, pop, op](int64_t i) {
    conv_any(pp, zp, wp, pop, op, g, std::min(rows, i * row_chunk),
             std::min(rows, (i + 1) * row_chunk));
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" int bnnns_xnor_fast_cpu() { return cpu_is_fast() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(BnnnsXnorConv, XnorConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("chunk_work")
                                  .Attr<int64_t>("parallel_work"));
