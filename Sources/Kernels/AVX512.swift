import CKernels
import Foundation

/// Whether the C kernels written for AVX-512 run (direct 3x3 convolutions, ConvTranspose2d's
/// narrow GEMMs, BatchNorm's sums) instead of the portable paths (im2col + OpenBLAS, Swift
/// loops): on where the CPU has AVX-512F, unless UNET_DIST_AVX512=0. Both paths give the same
/// results up to rounding; the tests run both.
nonisolated(unsafe) public var avx512Kernels =
    avx512Available && ProcessInfo.processInfo.environment["UNET_DIST_AVX512"] != "0"

/// Whether the CPU has AVX-512F.
public let avx512Available = cconv_available() != 0

/// Which kernels run, for the lines `train` and `bench` print: "AVX-512 kernels" or "portable kernels".
public var kernelsDescription: String { avx512Kernels ? "AVX-512 kernels" : "portable kernels" }
