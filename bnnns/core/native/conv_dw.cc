// The weight gradient of an NHWC / HWIO convolution for the XLA CPU runtime (an XLA FFI custom
// call), reading the activations and the cotangent in place (issue 17: XLA:CPU copies the
// activations to [C, H, W, N] for its own weight-gradient convolution).
//
// bnnns_conv_dw(x: f32[N,H,W,Ci], g: f32[N,Ho,Wo,Co]) -> f32[KH,KW,Ci,Co]
//   with attributes kh, kw, sh, sw, pad_top, pad_left:
//   dw[ky,kx,ci,co] = sum_{n,oy,ox} x[n, oy*sh + ky - pad_top, ox*sw + kx - pad_left, ci]
//                                   * g[n, oy, ox, co]          (x = 0 outside the image)
//
// Output rows (n, oy) are split into chunks on XLA's intra-op pool (`chunks`, fewer where
// their partial sums would pass 16 MiB); each chunk accumulates its own dw (float32), summed in
// chunk order at the end, so the result does not depend on the threads. Inside a chunk, blocks of output rows are walked once per (tap, 6 input channels,
// 16 output channels), whose 6 x 16 sums stay in registers (AVX2 + FMA, chosen at run time;
// a portable build of the same loops elsewhere).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BNNNS_DW_X86 1
#endif

namespace ffi = xla::ffi;

namespace {

struct DwGeometry {
  int64_t n, h, w, ci, ho, wo, co, kh, kw, sh, sw, pad_top, pad_left;
};

// Output positions walked per (tap, channel block): whole output rows, about this many.
constexpr int64_t kBlockPositions = 256;

// Output columns [lo, hi) whose tap kx falls inside the image.
inline void valid_columns(const DwGeometry& g, int64_t kx, int64_t* lo, int64_t* hi) {
  // ix = ox * sw + kx - pad_left in [0, w)
  const int64_t a = g.pad_left - kx;
  *lo = a <= 0 ? 0 : (a + g.sw - 1) / g.sw;
  const int64_t b = g.w - 1 + g.pad_left - kx;  // ox * sw <= b
  *hi = b < 0 ? 0 : std::min(g.wo, b / g.sw + 1);
}

// Portable: dw_tap[c][o] += sum over the rows' valid columns, one scalar at a time.
void tap_block_portable(const float* x, const float* gr, float* dw, const DwGeometry& g,
                        int64_t r0, int64_t r1, int64_t ky, int64_t kx) {
  int64_t lo, hi;
  valid_columns(g, kx, &lo, &hi);
  float* dtap = dw + (ky * g.kw + kx) * g.ci * g.co;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.ho, oy = r % g.ho, iy = oy * g.sh + ky - g.pad_top;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t ox = lo; ox < hi; ++ox) {
      const float* xp = x + ((n * g.h + iy) * g.w + ox * g.sw + kx - g.pad_left) * g.ci;
      const float* gp = gr + (r * g.wo + ox) * g.co;
      for (int64_t c = 0; c < g.ci; ++c) {
        const float xv = xp[c];
        float* d = dtap + c * g.co;
        for (int64_t o = 0; o < g.co; ++o) d[o] += xv * gp[o];
      }
    }
  }
}

#ifdef BNNNS_DW_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f")
#endif

namespace avx512 {  // 16 output channels per vector
#define BNNNS_DW_VEC __m512
#define BNNNS_DW_LANES 16
#define BNNNS_DW_LOAD _mm512_loadu_ps
#define BNNNS_DW_STORE _mm512_storeu_ps
#define BNNNS_DW_SET1 _mm512_set1_ps
#define BNNNS_DW_FMA _mm512_fmadd_ps
#include "conv_dw_micro.inc"
}  // namespace avx512

// The output channels [0, 16 * (co / 16)) of one tap in 6 x 32 and 6 x 16 blocks; the
// caller does the rest.
void tap_block_avx512(const float* x, const float* gr, float* dw, const DwGeometry& g,
                      int64_t r0, int64_t r1, int64_t ky, int64_t kx, int64_t lo, int64_t hi) {
  float* dtap = dw + (ky * g.kw + kx) * g.ci * g.co;
  const int64_t co32 = g.co / 32 * 32, co16 = g.co / 16 * 16;
  for (int64_t c0 = 0; c0 < g.ci; c0 += 6) {
    const int64_t nc = std::min<int64_t>(6, g.ci - c0);
    const float* xc = x + c0;
    for (int64_t o0 = 0; o0 < co32; o0 += 32)
      avx512::micro_any<2>(nc, xc, gr + o0, dtap + c0 * g.co + o0, g, r0, r1, ky, kx, lo, hi);
    if (co16 > co32)
      avx512::micro_any<1>(nc, xc, gr + co32, dtap + c0 * g.co + co32, g, r0, r1, ky, kx, lo, hi);
  }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace avx2 {  // 8 output channels per vector
#define BNNNS_DW_VEC __m256
#define BNNNS_DW_LANES 8
#define BNNNS_DW_LOAD _mm256_loadu_ps
#define BNNNS_DW_STORE _mm256_storeu_ps
#define BNNNS_DW_SET1 _mm256_set1_ps
#define BNNNS_DW_FMA _mm256_fmadd_ps
#include "conv_dw_micro.inc"
}  // namespace avx2

// One tap over rows [r0, r1): with AVX-512 the output channels up to the last multiple of
// 16 in tap_block_avx512, then 6 x 16 and 6 x 8 AVX2 register blocks; the channels past the
// last multiple of 8 in scalar code.
void tap_block_avx2(bool avx512, const float* x, const float* gr, float* dw,
                    const DwGeometry& g, int64_t r0, int64_t r1, int64_t ky, int64_t kx) {
  int64_t lo, hi;
  valid_columns(g, kx, &lo, &hi);
  if (lo >= hi) return;
  float* dtap = dw + (ky * g.kw + kx) * g.ci * g.co;
  const int64_t co16 = g.co / 16 * 16, co8 = g.co / 8 * 8;
  if (avx512) tap_block_avx512(x, gr, dw, g, r0, r1, ky, kx, lo, hi);
  for (int64_t c0 = 0; c0 < g.ci; c0 += 6) {
    const int64_t nc = std::min<int64_t>(6, g.ci - c0);
    const float* xc = x + c0;
    for (int64_t o0 = avx512 ? co16 : 0; o0 < co16; o0 += 16)
      avx2::micro_any<2>(nc, xc, gr + o0, dtap + c0 * g.co + o0, g, r0, r1, ky, kx, lo, hi);
    if (co8 > co16) avx2::micro_any<1>(nc, xc, gr + co16, dtap + c0 * g.co + co16, g, r0, r1, ky, kx, lo, hi);
  }
  if (co8 == g.co) return;
  for (int64_t r = r0; r < r1; ++r) {  // the channels left
    const int64_t n = r / g.ho, oy = r % g.ho, iy = oy * g.sh + ky - g.pad_top;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t ox = lo; ox < hi; ++ox) {
      const float* xp = x + ((n * g.h + iy) * g.w + ox * g.sw + kx - g.pad_left) * g.ci;
      const float* gp = gr + (r * g.wo + ox) * g.co;
      for (int64_t c = 0; c < g.ci; ++c)
        for (int64_t o = co8; o < g.co; ++o) dtap[c * g.co + o] += xp[c] * gp[o];
    }
  }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// 2: AVX-512F, 1: AVX2 + FMA, 0: portable.
int dw_isa() {
  static const int isa = !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 0
                         : __builtin_cpu_supports("avx512f")                               ? 2
                                                                                           : 1;
  return isa;
}
#else
int dw_isa() { return 0; }
#endif

// Rows [r0, r1) into dw (zeroed by the caller), a block of rows at a time.
void dw_rows(const float* x, const float* gr, float* dw, const DwGeometry& g, int64_t r0,
             int64_t r1) {
  const int64_t block = std::max<int64_t>(1, kBlockPositions / std::max<int64_t>(g.wo, 1));
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t b1 = std::min(r1, b0 + block);
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
#ifdef BNNNS_DW_X86
        if (dw_isa() > 0) {
          tap_block_avx2(dw_isa() == 2, x, gr, dw, g, b0, b1, ky, kx);
          continue;
        }
#endif
        tap_block_portable(x, gr, dw, g, b0, b1, ky, kx);
      }
  }
}

ffi::Error ConvDwImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> gr,
                      ffi::ResultBuffer<ffi::F32> out, int64_t kh, int64_t kw, int64_t sh,
                      int64_t sw, int64_t pad_top, int64_t pad_left, int64_t chunks_attr) {
  const auto xd = x.dimensions(), gd = gr.dimensions(), od = out->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || od.size() != 4)
    return ffi::Error::InvalidArgument("bnnns_conv_dw: x, g and dw must be 4-D");
  DwGeometry g{xd[0], xd[1], xd[2], xd[3], gd[1], gd[2], gd[3], kh, kw, sh, sw, pad_top, pad_left};
  if (gd[0] != g.n || od[0] != kh || od[1] != kw || od[2] != g.ci || od[3] != g.co)
    return ffi::Error::InvalidArgument("bnnns_conv_dw: dw must be f32[KH, KW, Ci, Co]");
  const int64_t rows = g.n * g.ho, size = kh * kw * g.ci * g.co;
  // at most 2^22 floats (16 MiB) of partial sums: a 3x3 conv of 512 channels gets 2 chunks
  const int64_t most = 1 + (int64_t{1} << 22) / std::max<int64_t>(size, 1);
  const int64_t chunks = std::clamp<int64_t>(std::min(chunks_attr, most), 1, std::max<int64_t>(rows, 1));
  const float* xp = x.typed_data();
  const float* gp = gr.typed_data();
  float* dw = out->typed_data();
  std::fill(dw, dw + size, 0.0f);
  if (chunks == 1) {
    dw_rows(xp, gp, dw, g, 0, rows);
    return ffi::Error::Success();
  }
  std::vector<float> partial((chunks - 1) * size, 0.0f);  // chunk 0 writes dw itself
  const int64_t per = (rows + chunks - 1) / chunks;
  bnnns_native::parallel_for(pool, chunks, [&, xp, gp, dw](int64_t i) {
    float* d = i == 0 ? dw : partial.data() + (i - 1) * size;
    dw_rows(xp, gp, d, g, std::min(rows, i * per), std::min(rows, (i + 1) * per));
  });
  for (int64_t i = 1; i < chunks; ++i) {  // in chunk order: independent of the threads
    const float* p = partial.data() + (i - 1) * size;
    for (int64_t k = 0; k < size; ++k) dw[k] += p[k];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BnnnsConvDw, ConvDwImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("chunks"));
