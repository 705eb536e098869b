// The conv fast path's kernels (kdbench.engine.native builds this file with the system's C++
// compiler and loads it with ctypes). M members at once, each its own weights; activations in the
// layout [M, C, H, W, Bp]: the batch innermost, padded to Bp, a multiple of 8, so that every tap
// of a k x k window is a run of contiguous 8-float vectors, multiplied by one broadcast weight.
// Stride 1, no padding (the caller pads), groups 1. Each kernel keeps a block of outputs in
// registers (the block sizes were measured: benchmarks/README.md). Members are spread over
// OpenMP threads; a member's sums run in one fixed order, so results do not depend on the
// number of threads.
#include <omp.h>
#include <stdint.h>

typedef float v8 __attribute__((vector_size(32), aligned(4)));
static inline v8 bc(float f) { return (v8){f, f, f, f, f, f, f, f}; }
static inline float hsum(v8 a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

// block sizes: output channels x vectors (forward), input channels x vectors (input gradient),
// output channels x taps (weight gradient)
#define FOB 2
#define FNV 4
#define GCB 2
#define GNV 4
#define WOB 2
#define WJB 4

// forward block: OB output channels x NV vectors of one output position
template <int OB, int NV>
static void fwd_block(const float *in, const float *w, const float *bias, float *out, int C, int H, int W,
                      int Ho, int Wo, int k, int Bp, int o0, int b0, int y, int x) {
  v8 acc[OB][NV];
  for (int o = 0; o < OB; o++) { v8 b = bc(bias ? bias[o0 + o] : 0.f); for (int v = 0; v < NV; v++) acc[o][v] = b; }
  const int K = C * k * k;
  const float *wp = w + (long)o0 * K;
  for (int c = 0; c < C; c++)
    for (int ky = 0; ky < k; ky++) {
      const float *row = in + (((long)c * H + y + ky) * W + x) * Bp + b0;
      const int kk = (c * k + ky) * k;
      for (int kx = 0; kx < k; kx++) {
        v8 iv[NV];
        for (int v = 0; v < NV; v++) iv[v] = *(const v8 *)(row + (long)kx * Bp + 8 * v);
        for (int o = 0; o < OB; o++) {
          v8 wv = bc(wp[(long)o * K + kk + kx]);
          for (int v = 0; v < NV; v++) acc[o][v] += wv * iv[v];
        }
      }
    }
  for (int o = 0; o < OB; o++) {
    float *dst = out + (((long)(o0 + o) * Ho + y) * Wo + x) * Bp + b0;
    for (int v = 0; v < NV; v++) *(v8 *)(dst + 8 * v) = acc[o][v];
  }
}

template <int OB, int NV>
static void fwd_any(int ob, int nv, const float *in, const float *w, const float *bias, float *out, int C, int H, int W,
                    int Ho, int Wo, int k, int Bp, int o0, int b0, int y, int x) {
  if constexpr (OB > 1) if (ob < OB) return fwd_any<OB - 1, NV>(ob, nv, in, w, bias, out, C, H, W, Ho, Wo, k, Bp, o0, b0, y, x);
  if constexpr (NV > 1) if (nv < NV) return fwd_any<OB, NV - 1>(ob, nv, in, w, bias, out, C, H, W, Ho, Wo, k, Bp, o0, b0, y, x);
  fwd_block<OB, NV>(in, w, bias, out, C, H, W, Ho, Wo, k, Bp, o0, b0, y, x);
}

template <int OB, int NV>
static void fwd_member(const float *in, const float *w, const float *bias, float *out, int C, int H, int W, int O,
                       int k, int Bp) {
  const int Ho = H - k + 1, Wo = W - k + 1, nvec = Bp / 8;
  for (int o0 = 0; o0 < O; o0 += OB)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int v0 = 0; v0 < nvec; v0 += NV) {
          const int ob = O - o0 < OB ? O - o0 : OB, nv = nvec - v0 < NV ? nvec - v0 : NV;
          fwd_any<OB, NV>(ob, nv, in, w, bias, out, C, H, W, Ho, Wo, k, Bp, o0, 8 * v0, y, x);
        }
}

// input gradient: din[c,i,j] = sum_{o, valid ky, kx} w[o,c,ky,kx] g[o,i-ky,j-kx]
template <int CB, int NV>
static void igrad_block(const float *g, const float *w, float *din, int C, int H, int W, int O, int k, int Bp,
                        int c0, int b0, int i, int j) {
  const int Ho = H - k + 1, Wo = W - k + 1, K = C * k * k;
  v8 acc[CB][NV];
  for (int c = 0; c < CB; c++) for (int v = 0; v < NV; v++) acc[c][v] = bc(0.f);
  const int ky0 = i - Ho + 1 > 0 ? i - Ho + 1 : 0, ky1 = i < k - 1 ? i : k - 1;
  const int kx0 = j - Wo + 1 > 0 ? j - Wo + 1 : 0, kx1 = j < k - 1 ? j : k - 1;
  for (int o = 0; o < O; o++)
    for (int ky = ky0; ky <= ky1; ky++) {
      const float *row = g + (((long)o * Ho + i - ky) * Wo + j) * Bp + b0;
      const float *wp = w + (long)o * K + ((long)c0 * k + ky) * k;
      for (int kx = kx0; kx <= kx1; kx++) {
        v8 gv[NV];
        for (int v = 0; v < NV; v++) gv[v] = *(const v8 *)(row - (long)kx * Bp + 8 * v);
        for (int c = 0; c < CB; c++) {
          v8 wv = bc(wp[(long)c * k * k + kx]);
          for (int v = 0; v < NV; v++) acc[c][v] += wv * gv[v];
        }
      }
    }
  for (int c = 0; c < CB; c++) {
    float *dst = din + (((long)(c0 + c) * H + i) * W + j) * Bp + b0;
    for (int v = 0; v < NV; v++) *(v8 *)(dst + 8 * v) = acc[c][v];
  }
}

template <int CB, int NV>
static void igrad_any(int cb, int nv, const float *g, const float *w, float *din, int C, int H, int W, int O, int k, int Bp,
                      int c0, int b0, int i, int j) {
  if constexpr (CB > 1) if (cb < CB) return igrad_any<CB - 1, NV>(cb, nv, g, w, din, C, H, W, O, k, Bp, c0, b0, i, j);
  if constexpr (NV > 1) if (nv < NV) return igrad_any<CB, NV - 1>(cb, nv, g, w, din, C, H, W, O, k, Bp, c0, b0, i, j);
  igrad_block<CB, NV>(g, w, din, C, H, W, O, k, Bp, c0, b0, i, j);
}

template <int CB, int NV>
static void igrad_member(const float *g, const float *w, float *din, int C, int H, int W, int O, int k, int Bp) {
  const int nvec = Bp / 8;
  for (int c0 = 0; c0 < C; c0 += CB)
    for (int i = 0; i < H; i++)
      for (int j = 0; j < W; j++)
        for (int v0 = 0; v0 < nvec; v0 += NV) {
          const int cb = C - c0 < CB ? C - c0 : CB, nv = nvec - v0 < NV ? nvec - v0 : NV;
          igrad_any<CB, NV>(cb, nv, g, w, din, C, H, W, O, k, Bp, c0, 8 * v0, i, j);
        }
}

// weight gradient: dw[o, c,ky,kx] = sum_{y,x,b} g[o,y,x,b] in[c,y+ky,x+kx,b]
template <int OB, int JB>
static void wgrad_block(const float *in, const float *g, float *dw, int C, int H, int W, int k, int Bp, int o0, int j0) {
  const int Ho = H - k + 1, Wo = W - k + 1, K = C * k * k, kk2 = k * k;
  long off[JB];
  for (int j = 0; j < JB; j++) { int jj = j0 + j, c = jj / kk2, r = jj % kk2; off[j] = (((long)c * H + r / k) * W + r % k) * Bp; }
  v8 acc[OB][JB];
  for (int o = 0; o < OB; o++) for (int j = 0; j < JB; j++) acc[o][j] = bc(0.f);
  const long plane = (long)Ho * Wo * Bp;
  for (int y = 0; y < Ho; y++)
    for (int x = 0; x < Wo; x++) {
      const float *ip = in + ((long)y * W + x) * Bp;
      const float *gp = g + (long)o0 * plane + ((long)y * Wo + x) * Bp;
      for (int b = 0; b < Bp; b += 8) {
        v8 iv[JB], gv[OB];
        for (int j = 0; j < JB; j++) iv[j] = *(const v8 *)(ip + off[j] + b);
        for (int o = 0; o < OB; o++) gv[o] = *(const v8 *)(gp + o * plane + b);
        for (int o = 0; o < OB; o++) for (int j = 0; j < JB; j++) acc[o][j] += gv[o] * iv[j];
      }
    }
  for (int o = 0; o < OB; o++) for (int j = 0; j < JB; j++) dw[(long)(o0 + o) * K + j0 + j] = hsum(acc[o][j]);
}

template <int OB, int JB>
static void wgrad_any(int ob, int jb, const float *in, const float *g, float *dw, int C, int H, int W, int k, int Bp, int o0, int j0) {
  if constexpr (OB > 1) if (ob < OB) return wgrad_any<OB - 1, JB>(ob, jb, in, g, dw, C, H, W, k, Bp, o0, j0);
  if constexpr (JB > 1) if (jb < JB) return wgrad_any<OB, JB - 1>(ob, jb, in, g, dw, C, H, W, k, Bp, o0, j0);
  wgrad_block<OB, JB>(in, g, dw, C, H, W, k, Bp, o0, j0);
}

template <int OB, int JB>
static void wgrad_member(const float *in, const float *g, float *dw, int C, int H, int W, int O, int k, int Bp) {
  const int K = C * k * k;
  for (int o0 = 0; o0 < O; o0 += OB)
    for (int j0 = 0; j0 < K; j0 += JB) {
      const int ob = O - o0 < OB ? O - o0 : OB, jb = K - j0 < JB ? K - j0 : JB;
      wgrad_any<OB, JB>(ob, jb, in, g, dw, C, H, W, k, Bp, o0, j0);
    }
}

extern "C" {
void conv_forward(const float *in, const float *w, const float *bias, float *out, int M, int C, int H, int W, int O,
                  int k, int Bp, int threads) {
  const int Ho = H - k + 1, Wo = W - k + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < M; m++)
    fwd_member<FOB, FNV>(in + (long)m * C * H * W * Bp, w + (long)m * O * C * k * k, bias ? bias + (long)m * O : nullptr,
                         out + (long)m * O * Ho * Wo * Bp, C, H, W, O, k, Bp);
}
void conv_input_grad(const float *g, const float *w, float *din, int M, int C, int H, int W, int O, int k, int Bp,
                     int threads) {
  const int Ho = H - k + 1, Wo = W - k + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < M; m++)
    igrad_member<GCB, GNV>(g + (long)m * O * Ho * Wo * Bp, w + (long)m * O * C * k * k, din + (long)m * C * H * W * Bp,
                           C, H, W, O, k, Bp);
}
void conv_weight_grad(const float *in, const float *g, float *dw, int M, int C, int H, int W, int O, int k, int Bp,
                      int threads) {
  const int Ho = H - k + 1, Wo = W - k + 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int m = 0; m < M; m++)
    wgrad_member<WOB, WJB>(in + (long)m * C * H * W * Bp, g + (long)m * O * Ho * Wo * Bp, dw + (long)m * O * C * k * k,
                           C, H, W, O, k, Bp);
}

// 2-D max-pool, window k x k, stride k (floor): the first maximum of each window in row-major
// order, as nn.MaxPool2d; `at` keeps its position for the backward pass
void pool_forward(const float *in, float *out, uint8_t *at, int M, int C, int H, int W, int k, int Bp,
                  int threads) {
  const int Ho = H / k, Wo = W / k;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long mc = 0; mc < (long)M * C; mc++) {
    const float *src = in + mc * H * W * Bp;
    float *dst = out + mc * Ho * Wo * Bp;
    uint8_t *pos = at + mc * Ho * Wo * Bp;
    for (int i = 0; i < Ho; i++)
      for (int j = 0; j < Wo; j++) {
        float *o = dst + ((long)i * Wo + j) * Bp;
        uint8_t *p = pos + ((long)i * Wo + j) * Bp;
        const float *first = src + ((long)i * k * W + j * k) * Bp;
        for (int b = 0; b < Bp; b++) { o[b] = first[b]; p[b] = 0; }
        for (int di = 0; di < k; di++)
          for (int dj = 0; dj < k; dj++) {
            if (di == 0 && dj == 0) continue;
            const float *v = src + ((long)(i * k + di) * W + j * k + dj) * Bp;
            const uint8_t here = (uint8_t)(di * k + dj);
            for (int b = 0; b < Bp; b++)
              if (v[b] > o[b] || v[b] != v[b]) { o[b] = v[b]; p[b] = here; }
          }
      }
  }
}

// its gradient: each window's gradient to the position kept; `din` zeroed by the caller
void pool_backward(const float *g, const uint8_t *at, float *din, int M, int C, int H, int W, int k, int Bp,
                   int threads) {
  const int Ho = H / k, Wo = W / k;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long mc = 0; mc < (long)M * C; mc++) {
    const float *src = g + mc * Ho * Wo * Bp;
    const uint8_t *pos = at + mc * Ho * Wo * Bp;
    float *dst = din + mc * H * W * Bp;
    for (int i = 0; i < Ho; i++)
      for (int j = 0; j < Wo; j++)
        for (int b = 0; b < Bp; b++) {
          const long q = ((long)i * Wo + j) * Bp + b;
          const int di = pos[q] / k, dj = pos[q] % k;
          dst[((long)(i * k + di) * W + j * k + dj) * Bp + b] = src[q];
        }
  }
}

// random crops and flips (`streams.Augment`): images [R, C, H, W] (row r of `in`, or row rows[r]: the
// batch gathered from the training set in the same pass), three uniforms per image in `u`
// [R, 3] (row offset, column offset, flip); dy = min(int(u0 * (2 pad + 1)), 2 pad), dx alike, mirrored
// if `flips` and u2 < 1/2 (float32 arithmetic, as torch computes them in `Augment.gathered`);
// out[r, c, y, x] = in[r, c, y + dy - pad, (mirrored ? W - 1 - x : x) + dx - pad], zero outside the
// image: the crop of the zero-padded image at (dy, dx), then mirrored
void crop_flip(const float *in, const int64_t *rows, float *out, const float *u, int R, int C, int H, int W,
               int pad, int flips, int threads) {
  const float places = (float)(2 * pad + 1);
  // threads only pay for themselves on large batches (a step's batch is ~1 MB: one is faster)
#pragma omp parallel for num_threads(threads) schedule(static) if ((long)R * C * H * W > (1L << 16))
  for (long r = 0; r < R; r++) {
    const int dy = (int)(u[3 * r] * places), dx = (int)(u[3 * r + 1] * places);
    const int oy = (dy < 2 * pad ? dy : 2 * pad) - pad, ox = (dx < 2 * pad ? dx : 2 * pad) - pad;
    const bool mirrored = flips && u[3 * r + 2] < 0.5f;
    // the output columns [x0, x1) read inside the image; the rest are zero
    const int x0 = mirrored ? (ox > 0 ? ox : 0) : (ox < 0 ? -ox : 0);
    const int x1 = mirrored ? (ox < 0 ? W + ox : W) : (ox > 0 ? W - ox : W);
    if (r + 1 < R) {  // the next image's rows are scattered over the training set: fetch them now
      const char *next = (const char *)(in + (rows ? (long)rows[r + 1] : r + 1) * C * (long)H * W);
      for (long k = 0; k < (long)C * H * W * (long)sizeof(float); k += 64) __builtin_prefetch(next + k);
    }
    for (int c = 0; c < C; c++) {
      const long from = rows ? (long)rows[r] : r;  // the image's row of `in` (a gathered batch)
      const float *src = in + (from * C + c) * (long)H * W;
      float *dst = out + (r * C + c) * (long)H * W;
      for (int y = 0; y < H; y++) {
        float *d = dst + (long)y * W;
        const int sy = y + oy;
        if (sy < 0 || sy >= H || x0 >= x1) {
          for (int x = 0; x < W; x++) d[x] = 0.f;
          continue;
        }
        const float *s = src + (long)sy * W;
        for (int x = 0; x < x0; x++) d[x] = 0.f;
        if (mirrored)
          for (int x = x0; x < x1; x++) d[x] = s[W - 1 - x + ox];
        else
          for (int x = x0; x < x1; x++) d[x] = s[x + ox];
        for (int x = x1; x < W; x++) d[x] = 0.f;
      }
    }
  }
}
}
