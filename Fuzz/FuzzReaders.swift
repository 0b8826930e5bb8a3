// libFuzzer entry point for the file readers: every input must be read or refused with a
// FormatError, never crash, hang or allocate without bound; and what a reader returns must be
// what the file holds (a shape whose product wrapped around would fail these checks). Built by
// tools/fuzz.sh with -sanitize=fuzzer,address from Sources/Formats plus this file.
import Foundation

/// The product of `dims` in floating point: exact below 2^53, far above anything a fuzz input
/// can hold, and free of the integer arithmetic under test.
private func product(_ dims: [Int]) -> Double { dims.reduce(1) { $0 * Double($1) } }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    let target = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? "all"
    if target == "npy" || target == "all" {
        if let a = try? NpyArray(data: data, path: "f") {
            precondition(a.shape.allSatisfy { (0...maxImageSide).contains($0) }, "npy shape \(a.shape)")
            precondition(product(a.shape) == Double(a.count) && a.count <= data.count, "npy count \(a.count) for \(a.shape)")
            precondition(a.floats().count == a.count)
            _ = try? a.labels(classes: 3, path: "f")
        }
    }
    if target == "nifti" || target == "all" {
        if let v = try? NIfTIVolume(data: data, path: "f") {
            precondition(v.dims.count == 3 && v.dims.allSatisfy { (1...32767).contains($0) }, "NIfTI dims \(v.dims)")
            precondition(product(v.dims) == Double(v.values.count), "NIfTI values \(v.values.count) for \(v.dims)")
            _ = v.values.reduce(0, +)
        }
    }
    if target == "mgh" || target == "all" {
        if let v = try? MGHVolume(data: data, path: "f") {
            let shape = v.dims + [v.frames]
            precondition(v.dims.count == 3 && shape.allSatisfy { (1...maxImageSide).contains($0) }, "MGH shape \(shape)")
            precondition(product(shape) == Double(v.values.count), "MGH values \(v.values.count) for \(shape)")
            precondition(v.affine.joined().allSatisfy(\.isFinite), "MGH affine \(v.affine)")
            _ = v.values.reduce(0, +)
            if let one = try? v.volume(path: "f") { precondition(one.values.count == v.values.count) }
        }
    }
    if target == "safetensors" || target == "all" {
        if let st = try? SafeTensors(data: data, path: "f") {
            for name in st.names {
                let e = st.entries[name]!
                precondition(product(e.shape) == Double(e.count) && e.bytes.count == e.count * SafeTensors.elementSize[e.dtype]!,
                             "safetensors \(name): \(e.shape) \(e.dtype) over \(e.bytes.count) bytes")
                _ = try? st.floats(name, path: "f"); _ = try? st.int64s(name, path: "f")
            }
        }
    }
    return 0
}
