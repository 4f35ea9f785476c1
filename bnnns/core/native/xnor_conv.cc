// XNOR-popcount binary convolution for the XLA CPU runtime (an XLA FFI custom call).
//
// bnnns_xnor_conv(x: f32[N,H,W,C], w: u32[L, 2*Cout], wpop: s32[KH*KW, Cout])
//   -> s32[N,Ho,Wo,Cout]   with attributes kh, kw, sh, sw, pad_top, pad_left, chunk_work,
//      parallel_work, isa.
//
// sign(x) (bit 1 <=> x >= 0, D10) is packed into row segments: for every input row and output
// column, M = ceil(KW*C / 64) words holding the KW pixels under it (bit kx*C + c). A window
// is KH whole segments, L = KH*M words (word ky*M + i; the weights `w` are packed the same way,
// two u32 per u64 word, pad bits 0, word i of channel co at u64 index i*Cout + co: channels
// side by side, as the vectors read them; wpop likewise by tap), and
//   acc = K_valid - 2 * (sum_i popcount(col_i XOR w_i) - corr),
// where a zero-padded tap contributes 0 bits to col: it adds popcount(w_tap) = wpop[tap] to
// the sum, which corr takes back, and K_valid counts only the taps inside the image. The
// result equals the int8 convolution of sign(x) with the +-1 weights over a zero-padded image
// exactly (int32). The loops are built three times and chosen at run time (`isa` -1: the best
// this CPU runs; 0, 1, 2 ask for one): portable C++, AVX2 (signs 8 floats per movemask,
// popcounts of 4 channels per vector by nibble table) and AVX-512 VPOPCNTDQ (8 channels per
// vector).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BNNNS_X86 1
#endif

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t n, h, w, c, cout, kh, kw, sh, sw, pad_top, pad_left, ho, wo;
  int64_t cw;      // u64 words per packed pixel
  int64_t m;       // u64 words per row segment (kw pixels)
  int64_t l;       // u64 words per window (kh segments)
};

namespace portable {
#define BNNNS_ISA 0
#include "xnor_body.inc"
#undef BNNNS_ISA
}  // namespace portable

#ifdef BNNNS_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif
namespace avx2 {
#define BNNNS_ISA 1
#include "xnor_body.inc"
#undef BNNNS_ISA
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,popcnt,avx512f,avx512vpopcntdq"))), \
                             apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,avx512f,avx512vpopcntdq")
#endif
namespace avx512 {
#define BNNNS_ISA 2
#include "xnor_body.inc"
#undef BNNNS_ISA
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

// The best instruction set this CPU runs: 2 AVX-512 VPOPCNTDQ, 1 AVX2 + POPCNT, 0 portable.
int best_isa() {
#ifdef BNNNS_X86
  static const int isa = (__builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512vpopcntdq"))
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"))
                                   ? 1
                                   : 0;
  return isa;
#else
  return 0;
#endif
}

void pack_any(int isa, const float* x, uint64_t* p, const Geometry& g, int64_t a, int64_t b) {
#ifdef BNNNS_X86
  if (isa == 2) return avx512::pack_rows(x, p, g, a, b);
  if (isa == 1) return avx2::pack_rows(x, p, g, a, b);
#endif
  portable::pack_rows(x, p, g, a, b);
}

void conv_any(int isa, const uint64_t* p, const uint64_t* z, const uint64_t* w,
              const int32_t* wp, int32_t* o, const Geometry& g, int64_t a, int64_t b) {
#ifdef BNNNS_X86
  if (isa == 2) return avx512::conv_rows(p, z, w, wp, o, g, a, b);
  if (isa == 1) return avx2::conv_rows(p, z, w, wp, o, g, a, b);
#endif
  portable::conv_rows(p, z, w, wp, o, g, a, b);
}

using bnnns_native::parallel_for;

ffi::Error XnorConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U32> w,
                        ffi::Buffer<ffi::S32> wpop, ffi::ResultBuffer<ffi::S32> out, int64_t kh,
                        int64_t kw, int64_t sh, int64_t sw, int64_t pad_top, int64_t pad_left,
                        int64_t chunk_work, int64_t parallel_work, int64_t isa_attr) {
  const auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || wd.size() != 2 || od.size() != 4)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: x, out must be 4-D and w 2-D");
  Geometry g{xd[0], xd[1],   xd[2],    xd[3], od[3], kh, kw, sh,
             sw,    pad_top, pad_left, od[1], od[2], 0,  0,  0};
  g.cw = (g.c + 63) / 64;
  g.m = (kw * g.c + 63) / 64;
  g.l = kh * g.m;
  const auto pd = wpop.dimensions();
  if (wd[0] != g.l || wd[1] != 2 * g.cout || od[0] != g.n)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: w must be u32[L, 2*Cout]");
  if (pd.size() != 2 || pd[0] != kh * kw || pd[1] != g.cout)
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: wpop must be s32[KH*KW, Cout]");
  if (isa_attr < -1 || isa_attr > best_isa())
    return ffi::Error::InvalidArgument("bnnns_xnor_conv: isa must be -1 or 0.." +
                                       std::to_string(best_isa()) + " on this CPU");
  const int isa = isa_attr < 0 ? best_isa() : static_cast<int>(isa_attr);
  thread_local std::vector<uint64_t> packed, zero_row;
  packed.resize(g.n * g.h * g.wo * g.m);  // every segment is written by pack_rows
  zero_row.assign(g.wo * g.m, 0);
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
    pack_any(isa, xp, pp, g, 0, in_rows);
    conv_any(isa, pp, zp, wp, pop, op, g, 0, rows);
    return ffi::Error::Success();
  }
  const int64_t chunks = std::clamp<int64_t>(work / chunk_work, 1, 64);
  const int64_t in_chunk = (in_rows + chunks - 1) / chunks;
  parallel_for(pool, chunks, [&, xp, pp](int64_t i) {
    pack_any(isa, xp, pp, g, std::min(in_rows, i * in_chunk), std::min(in_rows, (i + 1) * in_chunk));
  });
  const int64_t row_chunk = (rows + chunks - 1) / chunks;
  parallel_for(pool, chunks, [&, pp, zp, wp, pop, op](int64_t i) {
    conv_any(isa, pp, zp, wp, pop, op, g, std::min(rows, i * row_chunk),
             std::min(rows, (i + 1) * row_chunk));
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" int bnnns_xnor_best_isa() { return best_isa(); }

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
                                  .Attr<int64_t>("parallel_work")
                                  .Attr<int64_t>("isa"));
