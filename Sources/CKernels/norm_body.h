// The body of the batch-norm kernels (norm.c), included once per instruction-set level with FN
// and ATTR defined. Sums use 16 lanes at every level (see norm.c).
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(s) CAT(FN, s)
typedef float NAME(_v16) __attribute__((ext_vector_type(16)));

#define NV_LOAD(p) ({ NAME(_v16) _v; __builtin_memcpy(&_v, (p), sizeof _v); _v; })
#define NV_STORE(p, v) do { NAME(_v16) _v = (v); __builtin_memcpy((p), &_v, sizeof _v); } while (0)

// The 16 lanes added in a fixed tree: (l + l+8), then (+4), (+2), (+1).
ATTR static inline __attribute__((always_inline)) float NAME(_fold)(const NAME(_v16) *v) {
    float t[16];
    __builtin_memcpy(t, v, sizeof t);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) t[i] = t[i] + t[i + w];
    return t[0];
}

// out = (Σ (x − shift), Σ (x − shift)²).
ATTR static void NAME(_moments)(const float *x, size_t n, float shift, float out[2]) {
    NAME(_v16) a = 0, b = 0;
    const NAME(_v16) s = shift;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const NAME(_v16) d = NV_LOAD(x + i) - s;
        a += d;
        b += d * d;
    }
    float sa = NAME(_fold)(&a), sb = NAME(_fold)(&b);
    for (; i < n; i++) { const float d = x[i] - shift; sa += d; sb += d * d; }
    out[0] = sa;
    out[1] = sb;
}

// y = γ·((x − mean)·inv) + β, then max(·, 0) if relu (NaN and −0 pass, as Vector.relu).
ATTR static void NAME(_forward)(const float *x, float *y, size_t n, float mean, float inv, float gamma, float beta,
                                int relu) {
    const NAME(_v16) m = mean, iv = inv, g = gamma, bt = beta, z = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const NAME(_v16) o = g * ((NV_LOAD(x + i) - m) * iv) + bt;
        NV_STORE(y + i, relu ? (o < z ? z : o) : o);
    }
    for (; i < n; i++) {
        const float o = gamma * ((x[i] - mean) * inv) + beta;
        y[i] = relu && o < 0 ? 0 : o;
    }
}

// out = (Σ g, Σ g·x̂) with x̂ = (x − mean)·inv and g = dy, or 0 where mask ≤ 0 (a ReLU's gradient).
ATTR static void NAME(_sums)(const float *dy, const float *x, const float *mask, size_t n, float mean, float inv,
                             float out[2]) {
    NAME(_v16) a = 0, b = 0;
    const NAME(_v16) m = mean, iv = inv, z = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        NAME(_v16) g = NV_LOAD(dy + i);
        if (mask) g = NV_LOAD(mask + i) > z ? g : z;
        a += g;
        b += g * ((NV_LOAD(x + i) - m) * iv);
    }
    float sa = NAME(_fold)(&a), sb = NAME(_fold)(&b);
    for (; i < n; i++) {
        const float g = !mask || mask[i] > 0 ? dy[i] : 0;
        sa += g;
        sb += g * ((x[i] - mean) * inv);
    }
    out[0] = sa;
    out[1] = sb;
}

// dx = k·(g − a − x̂·b), g and x̂ as in _sums.
ATTR static void NAME(_dx)(const float *dy, const float *x, const float *mask, float *dx, size_t n, float mean,
                           float inv, float k, float a, float b) {
    const NAME(_v16) m = mean, iv = inv, kv = k, av = a, bv = b, z = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        NAME(_v16) g = NV_LOAD(dy + i);
        if (mask) g = NV_LOAD(mask + i) > z ? g : z;
        NV_STORE(dx + i, kv * (g - av - ((NV_LOAD(x + i) - m) * iv) * bv));
    }
    for (; i < n; i++) {
        const float g = !mask || mask[i] > 0 ? dy[i] : 0;
        dx[i] = k * (g - a - ((x[i] - mean) * inv) * b);
    }
}

// Batch norm, its ReLU and a 2×2 max pool (stride 2) over one h × w plane (h, w even), in one read
// of x. Everything in between stays in `scratch` (lockstep_bn_pool_scratch_floats, in cache): the
// normalised, rectified plane and a copy of x (each padded, so that every load is a whole vector).
// The pooled plane, x at each window's max and the window's choice are stored straight into the
// outputs, 8 at a time, but for the plane's last blocks, which go through the scratch. The max
// is the separate pool's (the first of equals in the order (0,0), (0,1), (1,0), (1,1)), so the bits
// are those of the three layers apart. `code` gets the window position (0-3), plus 4 where the max
// is not > 0 (the ReLU passes no gradient there); `xmax` is all backward needs of x before dx.
typedef float NAME(_v8) __attribute__((ext_vector_type(8)));
typedef int NAME(_i8) __attribute__((ext_vector_type(8)));
typedef unsigned char NAME(_b8) __attribute__((ext_vector_type(8)));
#define EVEN(v) __builtin_shufflevector((v), (v), 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD(v) __builtin_shufflevector((v), (v), 1, 3, 5, 7, 9, 11, 13, 15)
ATTR static void NAME(_forward_pool)(const float *x, size_t h, size_t w, float mean, float inv, float gamma,
                                     float beta, float *scratch, float *out, unsigned char *code, float *xmax) {
    const size_t n = h * w, ho = h / 2, wo = w / 2, no = ho * wo;
    float *ys = scratch, *xs = ys + n + 16, *outs = xs + n + 16, *xms = outs + no + 8;
    unsigned char *cs = (unsigned char *)(xms + no + 8);
    {   // y = relu(γ·x̂ + β) into ys, x into xs (NAME(_forward)'s arithmetic)
        const NAME(_v16) m = mean, iv = inv, g = gamma, bt = beta, z = 0;
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            const NAME(_v16) v = NV_LOAD(x + i), o = g * ((v - m) * iv) + bt;
            NV_STORE(ys + i, o < z ? z : o);
            NV_STORE(xs + i, v);
        }
        for (; i < n; i++) {
            const float o = gamma * ((x[i] - mean) * inv) + beta;
            ys[i] = o < 0 ? 0 : o;
            xs[i] = x[i];
        }
    }
    const NAME(_v8) zero = 0;
    const NAME(_i8) one = 1, two = 2, three = 3, four = 4, none = 0;
    size_t tail = no;   // where the blocks through the scratch begin
    for (size_t oh = 0; oh < ho; oh++) {
        const float *y0 = ys + 2 * oh * w, *y1 = y0 + w, *x0 = xs + 2 * oh * w, *x1 = x0 + w;
        for (size_t ow = 0; ow < wo; ow += 8) {   // 8 outputs; past the row's end they are overwritten or unused
            const NAME(_v16) a = NV_LOAD(y0 + 2 * ow), b = NV_LOAD(y1 + 2 * ow);
            const NAME(_v16) xa = NV_LOAD(x0 + 2 * ow), xb = NV_LOAD(x1 + 2 * ow);
            NAME(_v8) best = EVEN(a), xbest = EVEN(xa), v;
            NAME(_i8) at = none, gt;
            v = ODD(a); gt = v > best; best = gt ? v : best; xbest = gt ? ODD(xa) : xbest; at = gt ? one : at;
            v = EVEN(b); gt = v > best; best = gt ? v : best; xbest = gt ? EVEN(xb) : xbest; at = gt ? two : at;
            v = ODD(b); gt = v > best; best = gt ? v : best; xbest = gt ? ODD(xb) : xbest; at = gt ? three : at;
            at = best > zero ? at : at | four;
            const NAME(_b8) c8 = __builtin_convertvector(at, NAME(_b8));
            // Straight into the outputs while the 8 stay inside the plane (a row's spill into the
            // next row is overwritten by it). Blocks go in increasing p, so those through the
            // scratch are the last ones, and they cover [the first one's p, no) after the rest.
            const size_t p = oh * wo + ow;
            const int direct = p + 8 <= no;
            if (!direct && p < tail) tail = p;
            __builtin_memcpy(direct ? out + p : outs + p, &best, sizeof best);
            __builtin_memcpy(direct ? xmax + p : xms + p, &xbest, sizeof xbest);
            __builtin_memcpy(direct ? code + p : cs + p, &c8, sizeof c8);
        }
    }
    for (size_t i = tail; i < no; i++) { out[i] = outs[i]; xmax[i] = xms[i]; code[i] = cs[i]; }
}
#undef EVEN
#undef ODD

// The fused layer's gradient g over the plane, as the separate pool and ReLU give it, into the
// scratch's first plane: 0 + gp at each window's max where the max was > 0, +0 elsewhere; with
// xmax, x at those places and 0 elsewhere into its second. Whole vectors throughout: the pooled
// inputs are read where they lie but for the plane's last block (a padded copy in the scratch),
// and each row's last block spills into the next row before that row is written.
typedef int NAME(_i16) __attribute__((ext_vector_type(16)));
#define PAIRS(v) __builtin_shufflevector((v), (v), 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
ATTR static void NAME(_pool_expand)(const float *gp, const unsigned char *code, const float *xmax, size_t h,
                                    size_t w, float *scratch) {
    const size_t n = h * w, ho = h / 2, wo = w / 2, no = ho * wo;
    float *gs = scratch, *xs = gs + n + 16, *gpc = xs + n + 16, *xmc = gpc + no + 8;
    unsigned char *cc = (unsigned char *)(xmc + no + 8);
    // Blocks of 8 that stay inside the plane are loaded where they lie; the last ones, which
    // reach past it, from a padded copy of the plane's last 8 entries.
    const size_t from = no > 8 ? no - 8 : 0;
    __builtin_memcpy(gpc + from, gp + from, (no - from) * sizeof(float));
    __builtin_memcpy(cc + from, code + from, no - from);
    if (xmax) __builtin_memcpy(xmc + from, xmax + from, (no - from) * sizeof(float));
    const NAME(_i16) parity = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
    const NAME(_v16) z = 0;
    for (size_t oh = 0; oh < ho; oh++) {
        for (int r = 0; r < 2; r++) {
            const NAME(_i16) want = parity + 2 * r;
            float *grow = gs + (2 * oh + r) * w, *xrow = xs + (2 * oh + r) * w;
            for (size_t ow = 0; ow < wo; ow += 8) {
                NAME(_v8) g8, x8;
                NAME(_b8) c8;
                const size_t p = oh * wo + ow;
                const int direct = p + 8 <= no;
                __builtin_memcpy(&g8, direct ? gp + p : gpc + p, sizeof g8);
                __builtin_memcpy(&c8, direct ? code + p : cc + p, sizeof c8);
                const NAME(_i8) ci = __builtin_convertvector(c8, NAME(_i8));
                const NAME(_i16) c16 = PAIRS(ci);
                const NAME(_v16) g16 = z + PAIRS(g8);   // 0 + gp, as the separate pool adds it
                NV_STORE(grow + 2 * ow, c16 == want ? g16 : z);
                if (xmax) {
                    __builtin_memcpy(&x8, direct ? xmax + p : xmc + p, sizeof x8);
                    NV_STORE(xrow + 2 * ow, c16 == want ? PAIRS(x8) : z);
                }
            }
        }
    }
}
#undef PAIRS

// out = (Σ g, Σ g·x̂) of the fused layer: the expanded plane through _sums, the same additions in the
// same order as the separate layers' (the zeros they add change no sum).
ATTR static void NAME(_pool_sums)(const float *gp, const unsigned char *code, const float *xmax, size_t h, size_t w,
                                  float mean, float inv, float *scratch, float out[2]) {
    NAME(_pool_expand)(gp, code, xmax, h, w, scratch);
    NAME(_sums)(scratch, scratch + h * w + 16, 0, h * w, mean, inv, out);
}

// dx of the fused layer: the expanded plane through _dx.
ATTR static void NAME(_pool_dx)(const float *gp, const unsigned char *code, const float *x, float *dx, size_t h,
                                size_t w, float mean, float inv, float k, float a, float b, float *scratch) {
    NAME(_pool_expand)(gp, code, 0, h, w, scratch);
    NAME(_dx)(scratch, x, 0, dx, h * w, mean, inv, k, a, b);
}

#undef NV_LOAD
#undef NV_STORE
#undef NAME
