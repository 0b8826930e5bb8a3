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
    /// Steps taken in the epoch after `epoch` (0 at an epoch's end), and the steps per epoch of
    /// the run that wrote it: a resume continues mid-epoch only where the epoch is the same.
    public var stepInEpoch = 0
    public var stepsPerEpoch: Int?
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
        if let stepsPerEpoch { m["step_in_epoch"] = "\(stepInEpoch)"; m["steps_per_epoch"] = "\(stepsPerEpoch)" }
        if !epochSums.isEmpty { m["epoch_sums"] = epochSums }
        return m
    }

    init(metadata m: [String: String], path: String) throws {
        model = m["model"] ?? "unet"
        func count(_ key: String) throws -> Int? {
            guard let text = m[key] else { return nil }
            guard let v = Int(text), v >= 0 else { throw FormatError(path, "bad \(key) \"\(text)\" in its metadata") }
            return v
        }
        epoch = try count("epoch") ?? 0
        step = try count("step") ?? 0
        stepsPerEpoch = try count("steps_per_epoch")
        if let spe = stepsPerEpoch {
            stepInEpoch = try count("step_in_epoch") ?? 0
            guard spe > 0, stepInEpoch < spe else {
                throw FormatError(path, "bad position in its metadata: step \(stepInEpoch) of \(spe) steps per epoch")
            }
        }
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

extension SegmentationModel {
    /// The model's tensors under the PyTorch state_dict() names of docs/design.md, section 3.
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
                    st.set("optimizer.\(state).\(v.name)",
                           floats: UnsafeBufferPointer(start: base + v.offset, count: v.count),
                           shape: v.shape)
                }
            }
            // One count, as long as every parameter has taken every step; per tensor after a freeze.
            st.set("optimizer.step", int64s: [Int64(store.steps.max() ?? 0)], shape: [])
            if Set(store.steps).count > 1 {
                for (v, n) in zip(store.parameters, store.steps) {
                    st.set("optimizer.step.\(v.name)", int64s: [Int64(n)], shape: [])
                }
            }
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
        // A plain PyTorch state_dict names no model; its tensors must fit all the same.
        let kind = config.kind.rawValue
        guard st.metadata["model"] == nil || info.model == kind else {
            throw FormatError(path, "is a \(info.model) checkpoint, not \(kind)")
        }
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
            let step = Int(try st.int64s("optimizer.step", path: path).first ?? 0)
            for (i, v) in store.parameters.enumerated() {
                let own = "optimizer.step.\(v.name)"
                store.steps[i] = st.has(own) ? Int(try st.int64s(own, path: path).first ?? 0) : step
            }
        }
        return info
    }
}

extension UNetResNet {
    /// Loads ImageNet weights of torchvision's resnet18 (its own state_dict names, as
    /// tools/convert_resnet18.py writes them) into the encoder. A stem conv for another number of
    /// input channels is kept as initialized (docs/design.md, section 1). Returns whether the stem was loaded.
    @discardableResult
    public func loadPretrained(_ st: SafeTensors, path: String) throws -> Bool {
        let prefix = "encoder."
        var stemLoaded = true
        func read(_ v: TensorView, into p: UnsafeMutablePointer<Float>) throws {
            let key = String(v.name.dropFirst(prefix.count))
            guard st.has(key) else {
                throw FormatError(path, "has no tensor \(key): --pretrained needs torchvision's resnet18 state_dict "
                                  + "(tools/convert_resnet18.py writes one)")
            }
            let shape = try st.entry(key, path: path).shape
            if key == "conv1.weight" && shape.count == 4 && shape[1] != config.inChannels
                && Array(shape[0..<1] + shape[2...]) == [v.shape[0], v.shape[2], v.shape[3]] {
                stemLoaded = false
                return
            }
            guard shape == v.shape else {
                throw FormatError(path, "tensor \(key) has shape \(shape), the encoder of width \(config.width) "
                                  + "needs \(v.shape)")
            }
            let values = try st.floats(key, path: path)
            p.update(from: values, count: values.count)
        }
        for v in store.parameters where v.name.hasPrefix(prefix) { try read(v, into: store.param(v)) }
        for v in store.buffers where v.name.hasPrefix(prefix) { try read(v, into: store.buffer(v)) }
        for (i, name) in store.counterNames.enumerated() where name.hasPrefix(prefix) {
            let key = String(name.dropFirst(prefix.count))
            if st.has(key) { store.counters[i] = try st.int64s(key, path: path).first ?? 0 }
        }
        return stemLoaded
    }
}
