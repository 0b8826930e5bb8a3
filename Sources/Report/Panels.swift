import Formats

/// Fixed colors for the three classes: white matter, gray matter, background.
public let classColors: [(UInt8, UInt8, UInt8)] = [(250, 230, 60), (40, 160, 140), (40, 20, 70)]

/// A grayscale picture of an H x W float image, scaled so that its range fills 0...255.
public func grayscale(_ values: UnsafeBufferPointer<Float>, width: Int, height: Int) -> RGBImage {
    var img = RGBImage(width: width, height: height)
    let lo = values.min() ?? 0, hi = values.max() ?? 1
    let scale = hi > lo ? 255 / (hi - lo) : 0
    for y in 0..<height {
        for x in 0..<width {
            let v = UInt8(max(0, min(255, (values[y * width + x] - lo) * scale)))
            img.set(x, y, (v, v, v))
        }
    }
    return img
}

/// A mask in the class colors.
public func colorize(_ labels: UnsafeBufferPointer<UInt8>, width: Int, height: Int) -> RGBImage {
    var img = RGBImage(width: width, height: height)
    for y in 0..<height {
        for x in 0..<width { img.set(x, y, classColors[min(Int(labels[y * width + x]), classColors.count - 1)]) }
    }
    return img
}

/// The image with the mask's non-background classes blended over it.
public func overlay(_ image: RGBImage, _ labels: UnsafeBufferPointer<UInt8>, background: Int = 2) -> RGBImage {
    var out = image
    for y in 0..<image.height {
        for x in 0..<image.width {
            let c = Int(labels[y * image.width + x])
            guard c != background, c < classColors.count else { continue }
            let p = image.get(x, y), k = classColors[c]
            let mix = { (a: UInt8, b: UInt8) in UInt8((Int(a) + Int(b)) / 2) }
            out.set(x, y, (mix(p.0, k.0), mix(p.1, k.1), mix(p.2, k.2)))
        }
    }
    return out
}

extension RGBImage {
    /// Nearest-neighbour enlargement by an integer factor.
    public func scaled(by k: Int) -> RGBImage {
        guard k > 1 else { return self }
        var out = RGBImage(width: width * k, height: height * k)
        for y in 0..<out.height { for x in 0..<out.width { out.set(x, y, get(x / k, y / k)) } }
        return out
    }
}

/// Rows of equally sized panels with a caption above each column: image | truth | prediction.
public func panelGrid(_ rows: [[RGBImage]], captions: [String]) -> RGBImage {
    guard let first = rows.first?.first else { return RGBImage(width: 1, height: 1) }
    let k = max(1, 160 / max(first.width, first.height))
    let w = first.width * k, h = first.height * k, gap = 6, head = 22
    var out = RGBImage(width: gap + captions.count * (w + gap), height: head + rows.count * (h + gap))
    for (c, caption) in captions.enumerated() {
        out.text(caption, x: gap + c * (w + gap), y: 6, color: (0, 0, 0), scale: 2)
    }
    for (r, row) in rows.enumerated() {
        for (c, panel) in row.enumerated() {
            out.draw(panel.scaled(by: k), at: gap + c * (w + gap), head + r * (h + gap))
        }
    }
    return out
}

/// image | truth | prediction, one row per slice: `count` H x W slices of `images`, their true
/// and predicted class masks.
public func slicePanel(images: UnsafeBufferPointer<Float>, truth: UnsafeBufferPointer<UInt8>,
                       predicted: UnsafeBufferPointer<UInt8>, count: Int, width: Int, height: Int) -> RGBImage {
    let plane = width * height
    var rows: [[RGBImage]] = []
    for n in 0..<count {
        let pixels = (n * plane)..<((n + 1) * plane)
        rows.append([grayscale(UnsafeBufferPointer(rebasing: images[pixels]), width: width, height: height),
                     colorize(UnsafeBufferPointer(rebasing: truth[pixels]), width: width, height: height),
                     colorize(UnsafeBufferPointer(rebasing: predicted[pixels]), width: width, height: height)])
    }
    return panelGrid(rows, captions: ["image", "truth", "prediction"])
}
