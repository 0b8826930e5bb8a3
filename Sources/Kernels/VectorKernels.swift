import CKernels
import Foundation

/// Which of CKernels' vector kernels run (direct 3x3 convolutions, ConvTranspose2d's 2x2
/// forward, BatchNorm's and MaxPool2d's loops, the loss's; with AVX-512 also ConvTranspose2d's
/// narrow GEMMs): the AVX-512 ones where the CPU has AVX-512F, the AVX2 ones (with FMA) where it
/// has those but not AVX-512 (AMD Zen 2 and 3, Intel before Skylake-SP), else the portable paths
/// (im2col + OpenBLAS, Swift and plain C loops). The AVX2 kernels give the AVX-512 ones' bits
/// (the loss's within float32's rounding: libmvec's 8- and 16-lane exp and log1p); the portable
/// paths the same results up to rounding. The tests run every path the CPU has.
/// The raw values are what CKernels' `vectors` arguments take (CBN_PORTABLE, CBN_AVX512, CBN_AVX2).
public enum VectorKernels: Int32, CaseIterable, Sendable {
    case portable = 0, avx512 = 1, avx2 = 2

    /// "AVX-512 kernels", "AVX2 kernels" or "portable kernels", for the lines `train` and `bench` print.
    public var description: String {
        switch self {
        case .avx512: "AVX-512 kernels"
        case .avx2: "AVX2 kernels"
        case .portable: "portable kernels"
        }
    }
}

/// Whether the CPU has AVX-512F.
public let avx512Available = cconv_available() != 0

/// Whether the CPU has AVX2 and FMA.
public let avx2Available = cconv_avx2_available() != 0

/// The kernels this CPU can run, portable first.
public let availableVectorKernels: [VectorKernels] =
    [.portable] + (avx2Available ? [.avx2] : []) + (avx512Available ? [.avx512] : [])

/// The best kernels the CPU runs, or fewer by the environment: UNET_DIST_KERNELS=portable|avx2
/// (UNET_DIST_AVX512=0 also means portable).
public let defaultVectorKernels: VectorKernels = {
    let environment = ProcessInfo.processInfo.environment
    let best = availableVectorKernels.last!
    if environment["UNET_DIST_AVX512"] == "0" { return .portable }
    switch environment["UNET_DIST_KERNELS"] {
    case "portable": return .portable
    case "avx2": return avx2Available ? .avx2 : .portable
    default: return best
    }
}()

/// The kernels that run; tests switch between `availableVectorKernels`.
nonisolated(unsafe) public var vectorKernels = defaultVectorKernels

/// Whether the AVX-512 kernels run (the layers that have no AVX2 kernels test this).
public var avx512Kernels: Bool { vectorKernels == .avx512 }

/// Which kernels run, for the lines `train` and `bench` print.
public var kernelsDescription: String { vectorKernels.description }
