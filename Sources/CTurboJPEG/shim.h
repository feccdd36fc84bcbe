// libjpeg-turbo's TurboJPEG API: a handful of calls that report errors by return value, where
// libjpeg's own API needs setjmp/longjmp (which Swift cannot use) to survive a corrupt file.
#include <turbojpeg.h>
