#ifndef UNET_DIST_CBLAS_SHIM_H
#define UNET_DIST_CBLAS_SHIM_H
#include <cblas.h>
#endif
