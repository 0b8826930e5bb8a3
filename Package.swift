// swift-tools-version:5.9
import PackageDescription

// Every target builds with -O, overflow and bounds checks kept: -Ounchecked, which turned a wrong
// size from a file into undefined behaviour, made no measurable difference to a training step,
// not even in Kernels (docs/readers.md).

let package = Package(
    name: "unet-dist",
    products: [
        .executable(name: "unet-dist", targets: ["unet-dist"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // Signal handlers that only record the signal (graceful stop), in C for async-signal safety.
        .target(name: "CStop"),
        // AVX-512 kernels in C (direct 3x3 convolutions, narrow GEMMs, BatchNorm sums), chosen at run
        // time where the CPU has AVX-512, with portable paths beside them.
        .target(name: "CKernels", linkerSettings: [.linkedLibrary("m")]),
        // Forward/backward pairs over Float32 NCHW buffers; no MPI, no files.
        .target(name: "Kernels", dependencies: ["CBLAS", "CKernels"]),
        // Readers and writers: .npy, safetensors; the seed-layout data set.
        .target(name: "Formats", dependencies: ["CZlib"]),
        // Pictures and pages for people: line plots, sample panels, the run report.
        .target(name: "Report", dependencies: ["Formats"]),
        // TensorBoard event files: protobuf messages generated from event.proto, TFRecord framing.
        .target(name: "TensorBoard", dependencies: ["Formats", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["event.proto"]),
        // Communicator (MPI and single-process).
        .target(name: "Distributed", dependencies: ["CMPI"]),
        // The UNet, its parameter arenas, checkpoints, training and evaluation.
        .target(name: "Model", dependencies: ["Kernels", "Formats", "Distributed", "Report", "TensorBoard"]),
        .executableTarget(name: "unet-dist", dependencies: [
            "Model", "Formats", "Distributed", "Kernels", "CStop",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Fixture loading and the float32 tolerance rule shared by the test targets.
        .target(name: "TestSupport", dependencies: ["Formats"], path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Formats", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "Kernels", "TestSupport"]),
        // Counts the test process's heap allocations (a training step must make none).
        .target(name: "MallocCounter", path: "Tests/MallocCounter"),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Kernels", "Formats", "Distributed", "TestSupport", "MallocCounter"]),
        .testTarget(name: "CLITests", dependencies: ["Formats", "Model", "TestSupport", "TensorBoard", "unet-dist"]),
    ]
)
