import Foundation

/// The data layout of docs/design.md, section 3: DIR/MRIs/<name>_<ix>.npy (float images) paired with
/// DIR/Segmentations/segm_<ix>.npy (class masks), in the order of the image file names.
public struct SeedDataset {
    public struct Pair: Equatable {
        public let image: String
        public let mask: String
    }

    public let directory: String
    public let pairs: [Pair]

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw FormatError(directory, "no such data directory")
        }
        let images = directory + "/MRIs", masks = directory + "/Segmentations"
        guard let names = try? fm.contentsOfDirectory(atPath: images) else {
            throw FormatError(images, "missing: the seed layout needs MRIs/ and Segmentations/")
        }
        let npy = names.filter { $0.hasSuffix(".npy") }.sorted()
        guard !npy.isEmpty else { throw FormatError(images, "holds no .npy images") }
        pairs = try npy.map { name in
            let stem = name.dropLast(4)
            let ix = stem.split(separator: "_", omittingEmptySubsequences: false).last!
            let mask = "\(masks)/segm_\(ix).npy"
            guard fm.fileExists(atPath: mask) else {
                throw FormatError("\(images)/\(name)", "has no mask (expected \(mask))")
            }
            return Pair(image: "\(images)/\(name)", mask: mask)
        }
    }

    public var count: Int { pairs.count }
}

/// One image and its mask, read and checked.
public struct Sample {
    public var image: [Float]
    public var labels: [UInt8]
    public var height: Int, width: Int

    public init(_ pair: SeedDataset.Pair, classes: Int) throws {
        let img = try NpyArray(path: pair.image)
        guard img.isFloatingPoint || img.type == .int(bytes: 1, signed: false) else {
            throw FormatError(pair.image, "image dtype \(img.type) cannot be used (float or uint8 expected)")
        }
        let hw = Array(img.shape.drop(while: { $0 == 1 }).suffix(2))
        // The reader bounds every side (`maxImageSide`) and `count` by the file's bytes.
        guard hw.count == 2, img.count == hw[0] * hw[1] else {
            throw FormatError(pair.image, "image has shape \(img.shape), expected H x W")
        }
        guard hw.allSatisfy({ $0 >= minImageSide }) else {
            throw FormatError(pair.image, "image is \(hw[0])x\(hw[1]), smaller than the "
                              + "\(minImageSide)x\(minImageSide) the models take")
        }
        let mask = try NpyArray(path: pair.mask)
        guard mask.count == img.count, Array(mask.shape.drop(while: { $0 == 1 }).suffix(2)) == hw else {
            throw FormatError(pair.mask, "mask shape \(mask.shape) does not match image shape \(img.shape)")
        }
        image = img.floats()
        if let bad = image.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(pair.image, "image has a non-finite value (\(image[bad])) at element \(bad)")
        }
        labels = try mask.labels(classes: classes, path: pair.mask)
        height = hw[0]; width = hw[1]
    }
}
