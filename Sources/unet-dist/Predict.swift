import ArgumentParser
import Foundation
import Formats
import Model
import Report

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Segment slices (.npy) with a checkpoint: masks, overlay pictures and white/gray matter amounts.")

    @Option(help: "A checkpoint (ours or a PyTorch state_dict as safetensors).") var checkpoint: String
    @Option(parsing: .upToNextOption, help: "Input .npy slices (H x W), or directories of them.") var input: [String]
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Also write each slice's logits (classes x H x W float32 .npy).") var saveLogits = false
    @OptionGroup var compute: ComputeOptions

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            guard comm.size == 1 else { throw RunError("predict runs on one process") }
            let st = try SafeTensors(path: checkpoint)
            let model = UNet(try UNet.Config(inferredFrom: st, path: checkpoint))
            try model.load(st, path: checkpoint)
            let predictor = Predictor(model)
            let files = try expandInputs(input)
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            var rows = ["file,wm_pixels,gm_pixels,background_pixels,wm_mm2,gm_mm2"]
            for file in files {
                let array = try NpyArray(path: file)
                let dims = array.shape.filter { $0 != 1 }
                guard dims.count == 2, array.isFloatingPoint || array.type == .int(bytes: 1, signed: false) else {
                    throw FormatError(file, "expected an H x W image, found shape \(array.shape)")
                }
                let (h, w) = (dims[0], dims[1])
                let image = array.floats()
                guard image.allSatisfy(\.isFinite) else { throw FormatError(file, "image has non-finite values") }
                let (logits, mask) = image.withUnsafeBufferPointer { predictor.predict($0, count: 1, height: h, width: w) }
                let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
                try writeFileAtomically(NpyArray(uint8: mask, shape: [h, w]).encoded(), to: "\(out)/\(stem)_mask.npy")
                if saveLogits {
                    let z = Array(UnsafeBufferPointer(start: logits.data, count: logits.count))
                    try writeFileAtomically(NpyArray(float32: z, shape: [model.config.classes, h, w]).encoded(),
                                            to: "\(out)/\(stem)_logits.npy")
                }
                let picture = image.withUnsafeBufferPointer { grayscale($0, width: w, height: h) }
                let overlaid = mask.withUnsafeBufferPointer { overlay(picture, $0) }
                try writeFileAtomically(panelGrid([[picture, overlaid]], captions: ["image", "prediction"]).pngData(),
                                        to: "\(out)/\(stem)_overlay.png")
                var counts = [Int](repeating: 0, count: model.config.classes)
                for m in mask { counts[Int(m)] += 1 }
                // A bare .npy slice carries no voxel size: areas are left empty.
                rows.append("\(URL(fileURLWithPath: file).lastPathComponent),\(counts[0]),\(counts[1]),\(counts[2]),,")
            }
            try writeFileAtomically(Data((rows.joined(separator: "\n") + "\n").utf8), to: out + "/volumes.csv")
            say(comm, "predict: \(files.count) slice(s) -> \(out) (masks, overlays, volumes.csv)")
        }
    }

    /// Files as given; directories contribute their .npy files in name order.
    func expandInputs(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw FormatError(p, "no such file") }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: p)) ?? []
                files += names.filter { $0.hasSuffix(".npy") }.sorted().map { "\(p)/\($0)" }
            } else {
                files.append(p)
            }
        }
        guard !files.isEmpty else { throw FormatError(paths.joined(separator: " "), "no .npy slices to segment") }
        return files
    }
}
