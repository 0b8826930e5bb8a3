// libFuzzer entry point for the file readers: every input must be read or refused with a
// FormatError, never crash, hang or allocate without bound. Built by tools/fuzz.sh with
// -sanitize=fuzzer,address from Sources/Formats plus this file.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    let target = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? "all"
    if target == "npy" || target == "all" {
        if let a = try? NpyArray(data: data, path: "f") { _ = a.floats(); _ = try? a.labels(classes: 3, path: "f") }
    }
    if target == "nifti" || target == "all" {
        if let v = try? NIfTIVolume(data: data, path: "f") { _ = v.values.reduce(0, +) }
    }
    if target == "safetensors" || target == "all" {
        if let st = try? SafeTensors(data: data, path: "f") {
            for name in st.names { _ = try? st.floats(name, path: "f"); _ = try? st.int64s(name, path: "f") }
        }
    }
    return 0
}
