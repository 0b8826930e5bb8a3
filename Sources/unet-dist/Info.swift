import ArgumentParser
import Foundation
import Formats
import Model

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint: model, size, position, metrics at save time.")

    @Argument(help: "A checkpoint (.safetensors).") var checkpoint: String
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        do {
            let st = try SafeTensors(path: checkpoint)
            let config = try ModelConfig(inferredFrom: st, path: checkpoint)
            let model = makeModel(config)
            try model.load(st, path: checkpoint)
            let m = st.metadata
            let metricsJSON = Data((m["metrics"] ?? "{}").utf8)
            let metrics = (try? JSONSerialization.jsonObject(with: metricsJSON) as? [String: Any]) ?? [:]
            if json {
                var object: [String: Any] = ["model": config.kind.rawValue, "parameters": model.store.parameterCount,
                                             "epoch": Int(m["epoch"] ?? "0") ?? 0, "step": Int(m["step"] ?? "0") ?? 0,
                                             "width": config.width, "channels": config.widths,
                                             "in_channels": config.inChannels, "classes": config.classes,
                                             "metrics": metrics]
                if let o = m["optimizer"] { object["optimizer"] = o }
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("model \(config.kind.rawValue) (widths \(config.widths), \(config.inChannels) in, "
                      + "\(config.classes) classes)")
                print("parameters \(model.store.parameterCount)")
                let optimizer = m["optimizer"].map { " optimizer \($0)" } ?? ""
                print("epoch \(m["epoch"] ?? "-") step \(m["step"] ?? "-")" + optimizer)
                if m.isEmpty { print("no metadata (a plain state_dict, e.g. saved by PyTorch)") }
                for key in metrics.keys.sorted() {
                    if key == "best_epoch", let e = metrics[key] as? Int { print("best_epoch \(e)") }
                    else if let v = metrics[key] as? Double { print(String(format: "%@ %.5f", key, v)) }
                }
            }
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
