import Foundation
import Formats
import Kernels

/// Where training stands, stored in a checkpoint's `__metadata__`. Only values that training
/// itself determines: equal training gives byte-identical files.
public struct CheckpointInfo: Equatable {
    public var model = "unet"
    /// Completed epochs and optimizer steps.
    public var epoch = 0
    public var step = 0
    public var seed: UInt64 = 0
    /// The flags that determine training, as JSON (TrainConfig.checkpointJSON).
    public var config = "{}"
    /// Metrics at save time (test_iou and the like), as JSON.
    public var metrics = "{}"
    public var optimizer: OptimizerKind?
    /// In a checkpoint written inside an epoch: that epoch's running loss and IoU sums so far.
    public var epochSums = ""
    public init() {}

    var metadata: [String: String] {
        var m = ["format": "unet-dist-1", "model": model, "epoch": "\(epoch)", "step": "\(step)", "seed": "\(seed)",
                 "config": config, "metrics": metrics]
        if let optimizer { m["optimizer"] = optimizer.rawValue }
        if !epochSums.isEmpty { m["epoch_sums"] = epochSums }
        return m
    }

    init(metadata m: [String: String], path: String) throws {
        model = m["model"] ?? "unet"
        epoch = Int(m["epoch"] ?? "0") ?? 0
        step = Int(m["step"] ?? "0") ?? 0
        seed = UInt64(m["seed"] ?? "0") ?? 0
        config = m["config"] ?? "{}"
        metrics = m["metrics"] ?? "{}"
        epochSums = m["epoch_sums"] ?? ""
        if let o = m["optimizer"] {
            guard let kind = OptimizerKind(rawValue: o) else { throw FormatError(path, "unknown optimizer \(o)") }
            optimizer = kind
        }
    }
}

extension UNet {
    /// The model's tensors under the seed's PyTorch state_dict() names.
    public func stateDict() -> SafeTensors {
        var st = SafeTensors()
        for v in store.parameters {
            st.set(v.name, floats: UnsafeBufferPointer(start: store.param(v), count: v.count), shape: v.shape)
        }
        for v in store.buffers {
            st.set(v.name, floats: UnsafeBufferPointer(start: store.buffer(v), count: v.count), shape: v.shape)
        }
        for (name, n) in zip(store.counterNames, store.counters) { st.set(name, int64s: [n], shape: []) }
        return st
    }

    /// A checkpoint: state_dict, optimizer state under `optimizer.`, position and config in metadata.
    public func checkpoint(_ info: CheckpointInfo) -> Data {
        var st = stateDict()
        if let kind = info.optimizer {
            let names = kind == .sgd ? ["momentum_buffer"] : ["exp_avg", "exp_avg_sq"]
            for (i, state) in names.enumerated() {
                let base = i == 0 ? store.firstMoment : store.secondMoment
                for v in store.parameters {
                    st.set("optimizer.\(state).\(v.name)", floats: UnsafeBufferPointer(start: base + v.offset, count: v.count),
                           shape: v.shape)
                }
            }
            st.set("optimizer.step", int64s: [Int64(store.optimizerStep)], shape: [])
        }
        st.metadata = info.metadata
        return st.encoded()
    }

    /// Loads weights and BN buffers (and the optimizer state when `optimizer` is set and present).
    /// Every tensor of the model must be there with its exact shape; a PyTorch `state_dict()` file
    /// has no metadata and loads the same way. Returns the checkpoint's info.
    @discardableResult
    public func load(_ st: SafeTensors, path: String, optimizer: OptimizerKind? = nil) throws -> CheckpointInfo {
        let info = try CheckpointInfo(metadata: st.metadata, path: path)
        guard info.model == "unet" else { throw FormatError(path, "is a \(info.model) checkpoint, not unet") }
        func read(_ name: String, _ shape: [Int], into p: UnsafeMutablePointer<Float>) throws {
            let e = try st.entry(name, path: path)
            guard e.shape == shape else {
                throw FormatError(path, "tensor \(name) has shape \(e.shape), the model needs \(shape)")
            }
            let values = try st.floats(name, path: path)
            p.update(from: values, count: values.count)
        }
        for v in store.parameters { try read(v.name, v.shape, into: store.param(v)) }
        for v in store.buffers { try read(v.name, v.shape, into: store.buffer(v)) }
        for (i, name) in store.counterNames.enumerated() {
            let values = try st.int64s(name, path: path)
            guard values.count == 1 else { throw FormatError(path, "tensor \(name) should hold one value") }
            store.counters[i] = values[0]
        }
        store.resetOptimizer()
        if let kind = optimizer, info.optimizer == kind {
            let names = kind == .sgd ? ["momentum_buffer"] : ["exp_avg", "exp_avg_sq"]
            for (i, state) in names.enumerated() {
                let base = i == 0 ? store.firstMoment : store.secondMoment
                for v in store.parameters { try read("optimizer.\(state).\(v.name)", v.shape, into: base + v.offset) }
            }
            store.optimizerStep = Int(try st.int64s("optimizer.step", path: path).first ?? 0)
        }
        return info
    }
}

extension UNet.Config {
    /// The widths, input channels and classes a state_dict's shapes imply, so that eval and
    /// predict need no flags for a checkpoint of another configuration.
    public init(inferredFrom st: SafeTensors, path: String) throws {
        func shape(_ name: String) throws -> [Int] {
            let s = try st.entry(name, path: path).shape
            guard s.count == 4 else { throw FormatError(path, "tensor \(name) has shape \(s), expected 4 dimensions") }
            return s
        }
        let first = try shape("conv1.0.0.weight"), out = try shape("out.weight")
        let widths = [first[0]] + (try (2...4).map { try shape("conv\($0).1.0.weight")[0] })
        self.init(inChannels: first[1], classes: out[0], channels: widths)
    }
}
