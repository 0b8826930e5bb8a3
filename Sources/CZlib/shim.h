#ifndef UNET_DIST_CZLIB_SHIM_H
#define UNET_DIST_CZLIB_SHIM_H
#include <zlib.h>
#endif
