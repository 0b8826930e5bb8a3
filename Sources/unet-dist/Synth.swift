import ArgumentParser
import Foundation
import Formats
import Kernels

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write deterministic brain-like phantoms: 2-D pairs in the seed's layout, or 3-D subjects "
            + "with a cohort CSV (for tests and offline demos).",
        discussion: """
            Each phantom: an elliptical head with scalp and skull, a folded gray-matter ribbon around \
            white matter, CSF in sulci and ventricles, a smooth bias field and Gaussian noise; T1-like \
            intensities in [0, 1]. Masks: 0 white matter, 1 gray matter, 2 background. The same seed \
            gives the same bytes.

            --count N --size S: N image/mask pairs of S x S pixels in the seed's layout.
            --volumes N [--size S]: N subjects as NIfTI volumes of S^3 voxels (default 48), DIR/<id>_T1.nii.gz \
            with its gray- and white-matter probability maps DIR/<id>_gm.nii.gz and DIR/<id>_wm.nii.gz, \
            voxel sizes and storage order varying between subjects, and DIR/cohort.csv for \
            `prepare --cohort` (docs/cohorts.md).
            """)

    @Option(help: "Output directory.") var out: String
    @Option(help: "Number of 2-D image/mask pairs.") var count: Int?
    @Option(help: "Number of 3-D phantom subjects (instead of --count).") var volumes: Int?
    @Option(help: "Side of the square images, or of the cubic volumes, in pixels.") var size: Int?
    @Option(help: "Seed: the same seed gives the same files.") var seed: UInt64 = 0
    @Flag(help: "Replace a data set already in --out.") var overwrite = false

    func validate() throws {
        guard (count == nil) != (volumes == nil) else { throw ValidationError("give either --count or --volumes") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let volumes, volumes < 1 { throw ValidationError("--volumes must be at least 1") }
        if count != nil && size == nil { throw ValidationError("--count needs --size") }
        if volumes != nil, let size, !(8...512).contains(size) {
            throw ValidationError("--size of volumes must be between 8 and 512")
        }
        if let size, !(8...8192).contains(size) { throw ValidationError("--size must be between 8 and 8192") }
    }

    func run() throws {
        runLocally {
            if let volumes { try writeVolumes(volumes, side: size ?? 48); return }
            let (count, size) = (count!, size!)
            let writer = try SeedLayoutWriter(directory: out, overwrite: overwrite)
            // One generator per phantom, seeded from a master stream, so each phantom depends only
            // on (seed, its index).
            var master = SplitMix64(seed: seed)
            var classCounts = [0, 0, 0]
            for i in 0..<count {
                var rng = SplitMix64(seed: master.next())
                let (image, labels) = Phantom(rng: &rng).render(size: size, rng: &rng)
                try writer.write(stem: "synth", index: SeedLayoutWriter.indexText(i, count: count),
                                 image: image, labels: labels)
                for l in labels { classCounts[Int(l)] += 1 }
            }
            try writer.commit()
            say("wrote \(count) phantoms of \(size)x\(size) to \(out) (seed \(seed))")
            say(Prepare.fractions(classCounts.map(Double.init)))
        }
    }
}

/// One random brain-like slice, described in head coordinates: the head is the unit disc after
/// undoing its center, rotation and elliptical semi-axes, so the brain follows the head's shape.
struct Phantom {
    enum Tissue { case air, scalp, skull, csf, gray, white }

    let center: (x: Double, y: Double), angle: Double, semiAxes: (x: Double, y: Double)
    /// Cortex surface radius: base plus a few sines of the polar angle.
    let cortex: [(amplitude: Double, frequency: Double, phase: Double)]
    let ribbon: Double
    /// White-matter folds: gyri reach out where the sine is high, sulci cut in where it is low.
    let folds: (amplitude: Double, frequency: Double, phase: Double)
    let ventricles: Bool
    let intensity: [Tissue: Double]
    let bias: (x: Double, y: Double, r: Double)
    let noise: Double

    init(rng: inout SplitMix64) {
        func u(_ lo: Double, _ hi: Double) -> Double { Double(rng.uniform(Float(lo), Float(hi))) }
        // Small scale stands for a slice near the top of the head.
        let scale = u(0.6, 1.0)
        center = (u(-0.06, 0.06), u(-0.06, 0.06))
        angle = u(-0.25, 0.25)
        semiAxes = (scale * u(0.72, 0.86), scale * u(0.82, 0.95))
        cortex = (0..<3).map { _ in (u(0.01, 0.025), u(3, 9).rounded(), u(0, 2 * .pi)) }
        ribbon = u(0.2, 0.3)
        folds = (u(0.06, 0.1), u(8, 14).rounded(), u(0, 2 * .pi))
        ventricles = scale > 0.75
        intensity = [.air: 0, .scalp: u(0.55, 0.7), .skull: u(0.04, 0.1), .csf: u(0.08, 0.16),
                     .gray: u(0.45, 0.55), .white: u(0.72, 0.85)]
        bias = (u(-0.1, 0.1), u(-0.1, 0.1), u(-0.1, 0.1))
        noise = u(0.015, 0.04)
    }

    func tissue(_ px: Double, _ py: Double) -> Tissue {
        let dx = px - center.x, dy = py - center.y
        let hx = (cos(angle) * dx + sin(angle) * dy) / semiAxes.x
        let hy = (-sin(angle) * dx + cos(angle) * dy) / semiAxes.y
        let rho = (hx * hx + hy * hy).squareRoot(), phi = atan2(hy, hx)
        if rho > 1 { return .air }
        if rho > 0.93 { return .scalp }
        if rho > 0.85 { return .skull }
        let fold = sin(folds.frequency * phi + folds.phase)
        // Gyri bulge out a little where the white matter reaches out under them.
        let outer = min(0.84, 0.8 + 0.01 * fold
                        + cortex.reduce(0) { $0 + $1.amplitude * sin($1.frequency * phi + $1.phase) })
        let inner = outer - ribbon + folds.amplitude * fold
        if ventricles && Self.inVentricle(hx, hy) { return .csf }
        if rho < inner { return .white }
        let sulcus = fold < -0.9 && rho > inner + 0.03
        return rho < outer && !sulcus ? .gray : .csf
    }

    /// Two small ellipses beside the midline.
    private static func inVentricle(_ hx: Double, _ hy: Double) -> Bool {
        [-0.15, 0.15].contains { side in
            let a = (hx - side) / 0.08, b = (hy + 0.05) / 0.25
            return a * a + b * b < 1
        }
    }

    /// The image (2 x 2 samples per pixel for smooth partial-volume edges, bias, noise, clipped to
    /// [0, 1]) and the mask (the tissue at each pixel's center).
    func render(size: Int, rng: inout SplitMix64) -> (Image2D, [UInt8]) {
        var pixels = [Float](repeating: 0, count: size * size)
        var labels = [UInt8](repeating: 2, count: size * size)
        let step = 2 / Double(size)
        for r in 0..<size {
            for c in 0..<size {
                let x = -1 + (Double(c) + 0.5) * step, y = -1 + (Double(r) + 0.5) * step
                var sum = 0.0
                for (ox, oy) in [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)] {
                    sum += intensity[tissue(x + ox * step, y + oy * step)]!
                }
                let field = 1 + bias.x * x + bias.y * y + bias.r * (x * x + y * y - 0.5)
                let value = sum / 4 * field + noise * Double(rng.normal())
                pixels[r * size + c] = Float(min(max(value, 0), 1))
                switch tissue(x, y) {
                case .white: labels[r * size + c] = 0
                case .gray: labels[r * size + c] = 1
                default: break
                }
            }
        }
        return (Image2D(height: size, width: size, pixels: pixels), labels)
    }
}
