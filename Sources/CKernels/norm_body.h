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

#undef NV_LOAD
#undef NV_STORE
#undef NAME
