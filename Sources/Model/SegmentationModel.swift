import Formats
import Kernels

/// The seed's two models (docs/design.md, section 1).
public enum ModelKind: String, Codable, CaseIterable {
    case unet
    case unetResnet = "unet-resnet"
}

/// What builds a model: its kind, input channels, classes and base width, from which every
/// other width follows by doubling (UNet: w, 2w, 4w, 8w, the seed's w = 16; ResNet-18: the same
/// from its stem, the seed's w = 64).
public struct ModelConfig: Codable, Equatable {
    public var kind = ModelKind.unet
    public var inChannels = 1
    public var classes = 3
    public var width: Int

    public init(_ kind: ModelKind = .unet, inChannels: Int = 1, classes: Int = 3, width: Int? = nil) {
        self.kind = kind; self.inChannels = inChannels; self.classes = classes
        self.width = width ?? Self.seedWidth(kind)
    }

    public static func seedWidth(_ kind: ModelKind) -> Int { kind == .unet ? 16 : 64 }

    public var widths: [Int] { (0..<4).map { width << $0 } }
}

/// A segmentation network over the shared parameter store: a forward that keeps what its
/// backward needs, and a backward that accumulates every parameter's gradient.
public protocol SegmentationModel: AnyObject {
    var config: ModelConfig { get }
    var store: ParameterStore { get }
    var context: LayerContext { get }
    /// Logits for a batch; the returned tensor is owned by the model and valid until the next forward.
    func forward(_ x: Tensor) -> Tensor
    /// Accumulates every parameter's gradient of the loss whose logits gradient is `dlogits`.
    /// Must follow a training-mode forward.
    func backward(_ dlogits: Tensor)
    /// The model's own initialization (PyTorch's, or torchvision's for the ResNet encoder), from
    /// our seeded generator; resets the optimizer state.
    func initialize(seed: UInt64)
    /// The parameters (indices into `store.parameters`) that `--freeze-encoder` holds still.
    var encoderParameters: Range<Int> { get }
}

extension SegmentationModel {
    public var training: Bool {
        get { context.training }
        set { context.training = newValue }
    }
}

public func makeModel(_ config: ModelConfig, seed: UInt64 = 0) -> SegmentationModel {
    switch config.kind {
    case .unet: return UNet(config, seed: seed)
    case .unetResnet: return UNetResNet(config, seed: seed)
    }
}

extension ModelConfig {
    /// The model a state_dict holds: its kind from the checkpoint's metadata or, for a plain
    /// PyTorch state_dict, from its tensor names; input channels, classes and width from its
    /// shapes. Eval and predict need no flags for a checkpoint of another configuration.
    public init(inferredFrom st: SafeTensors, path: String) throws {
        func shape(_ name: String) throws -> [Int] {
            let s = try st.entry(name, path: path).shape
            guard s.count == 4 else { throw FormatError(path, "tensor \(name) has shape \(s), expected 4 dimensions") }
            return s
        }
        let kind: ModelKind
        if let name = st.metadata["model"] {
            guard let k = ModelKind(rawValue: name) else {
                throw FormatError(path, "holds a model named \(name); this unet-dist knows "
                                  + ModelKind.allCases.map(\.rawValue).joined(separator: " and "))
            }
            kind = k
        } else {
            kind = st.has("encoder.conv1.weight") ? .unetResnet : .unet
        }
        switch kind {
        case .unet:
            let first = try shape("conv1.0.0.weight"), out = try shape("out.weight")
            self.init(.unet, inChannels: first[1], classes: out[0], width: first[0])
        case .unetResnet:
            let first = try shape("encoder.conv1.weight"), out = try shape("out.final.weight")
            self.init(.unetResnet, inChannels: first[1], classes: out[0], width: first[0])
        }
        // The model is built before its tensors are read: one that the file's tensors could not
        // fill (its deepest 3x3 convolution alone has (8 width)^2 x 9 weights) is refused before
        // it is allocated.
        guard inChannels >= 1, classes >= 1, width >= 1 else {
            throw FormatError(path, "describes an empty model (width \(width), \(inChannels) input channels, "
                              + "\(classes) classes)")
        }
        let held = st.entries.values.reduce(0) { $0 + $1.count }
        guard let deepest = checkedProduct([8, width, 8, width, 9]), deepest <= held else {
            throw FormatError(path, "describes a model (width \(width), \(inChannels) input channels, "
                              + "\(classes) classes) larger than the \(held) values it holds")
        }
    }
}
