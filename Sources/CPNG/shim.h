// libpng's simplified reading API (png_image); its version and size macros as functions.
#include <png.h>
#include <string.h>

static inline void lockstep_png_image_init(png_image *image) {
    memset(image, 0, sizeof(*image));
    image->version = PNG_IMAGE_VERSION;
}

static inline size_t lockstep_png_image_size(const png_image *image) { return PNG_IMAGE_SIZE(*image); }
