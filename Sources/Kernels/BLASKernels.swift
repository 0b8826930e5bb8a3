import CBLAS
import Foundation

/// The OpenBLAS kernel set in use ("SkylakeX", "Haswell", "Prescott", ...).
public var blasCoreName: String { String(cString: openblas_get_corename()) }

/// Where OpenBLAS could not identify the CPU (virtual machines often mask the model), its
/// runtime dispatch falls back to generic Prescott (SSE3) kernels, 2-3x slower here. When the
/// user has not chosen with OPENBLAS_CORETYPE, pick the kernel set the CPU's features support
/// and restart the process with it: OpenBLAS reads the variable only when it loads.
/// Must run before anything else (before MPI is initialized).
public func selectBLASKernelsOrReexec() {
    let env = ProcessInfo.processInfo.environment
    guard env["OPENBLAS_CORETYPE"] == nil, env["UNET_DIST_BLAS_CHOSEN"] == nil else { return }
    guard blasCoreName.lowercased() == "prescott" else { return }
    let core: String
    if cblas_cpu_has_avx512_skylakex() != 0 { core = "SkylakeX" }
    else if cblas_cpu_has_avx2_fma() != 0 { core = "Haswell" }
    else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("UNET_DIST_BLAS_CHOSEN", core, 1)
    let args = CommandLine.unsafeArgv
    execv("/proc/self/exe", args)
    // execv returned: keep going with the generic kernels.
}
