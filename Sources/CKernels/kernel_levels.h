// Instantiates a kernel body once per instruction-set level (rowwise.c, tree_dense.c): include
// with BODY (the body header's name, quoted) and PREFIX defined; defines PREFIX_avx512,
// PREFIX_avx2 (x86-64 with clang) and PREFIX_baseline. Register tiles: R rows × NV vectors of VL
// floats, chosen by timing on a Zen 4 (8×2 at AVX-512, 16 of its 32 registers; 6×2 at AVX2).
#define LEVEL_CAT_(a, b) a##b
#define LEVEL_CAT(a, b) LEVEL_CAT_(a, b)
#define NV 2
#if defined(__x86_64__) && defined(__clang__)
#define FN LEVEL_CAT(PREFIX, _avx512)
#define VL 16
#define R 8
#define ATTR __attribute__((target("avx512f")))
#include BODY
#undef FN
#undef VL
#undef R
#undef ATTR
#define FN LEVEL_CAT(PREFIX, _avx2)
#define VL 8
#define R 6
#define ATTR __attribute__((target("avx2,fma")))
#include BODY
#undef FN
#undef VL
#undef R
#undef ATTR
#endif
#define FN LEVEL_CAT(PREFIX, _baseline)
#define VL 4
#define R 2
#define ATTR
#include BODY
#undef FN
#undef VL
#undef R
#undef ATTR
#undef NV
#undef LEVEL_CAT
#undef LEVEL_CAT_
