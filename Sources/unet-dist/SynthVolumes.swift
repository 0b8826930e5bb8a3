import Foundation
import Formats
import Kernels

/// `synth --volumes`: phantom subjects as 3-D NIfTI volumes with their tissue maps and a cohort CSV
/// (docs/cohorts.md), so that `prepare --cohort` and everything after it run offline.
extension Synth {
    func writeVolumes(_ count: Int, side: Int) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: out + "/cohort.csv") && !overwrite {
            throw FormatError(out, "already holds a cohort (cohort.csv); pass --overwrite to replace it")
        }
        // Everything staged first and moved into place with cohort.csv last: an interrupted run
        // leaves no cohort that names half-written volumes.
        let staging = out + "/.unet-dist-staging-\(getpid())"
        do {
            try? fm.removeItem(atPath: staging)
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: true)
        } catch {
            throw FormatError(out, "cannot create the output directory: \(error.localizedDescription)")
        }
        defer { try? fm.removeItem(atPath: staging) }
        var master = SplitMix64(seed: seed)
        var rows = ["subject,t1,gm,wm"], files: [String] = []
        let width = max(2, String(count).count)
        for i in 0..<count {
            var rng = SplitMix64(seed: master.next())
            let id = "synth-" + String(repeating: "0", count: width - String(i + 1).count) + String(i + 1)
            let head = PhantomHead(rng: &rng)
            let (t1, gm, wm) = head.render(side: side, rng: &rng)
            let affine = head.affine(side: side)
            for (kind, values) in [("T1", t1), ("gm", gm), ("wm", wm)] {
                let name = "\(id)_\(kind).nii.gz"
                try NIfTIVolume(dims: [side, side, side], values: values, affine: affine)
                    .writeGzip(to: "\(staging)/\(name)")
                files.append(name)
            }
            rows.append("\(id),\(id)_T1.nii.gz,\(id)_gm.nii.gz,\(id)_wm.nii.gz")
        }
        try writeFileAtomically(Data((rows.joined(separator: "\n") + "\n").utf8), to: staging + "/cohort.csv")
        for name in files + ["cohort.csv"] {
            do {
                try? fm.removeItem(atPath: "\(out)/\(name)")
                try fm.moveItem(atPath: "\(staging)/\(name)", toPath: "\(out)/\(name)")
            } catch {
                throw FormatError("\(out)/\(name)", "cannot write: \(error.localizedDescription)")
            }
        }
        say("wrote \(count) phantom subjects of \(side)x\(side)x\(side) voxels and \(out)/cohort.csv (seed \(seed))")
    }
}

/// One random brain-like head in 3-D, the 2-D `Phantom` grown a dimension: in head coordinates
/// the head is the unit ball; cortex, folds and ventricles as there. Voxel sizes and the storage
/// order of x vary between subjects, so that slicing must follow each file's affine.
struct PhantomHead {
    enum Tissue { case air, scalp, skull, csf, gray, white }

    let center: [Double], angle: Double, semiAxes: [Double]
    let cortex: [(amplitude: Double, frequency: Double, phase: Double)]
    let ribbon: Double
    let folds: (amplitude: Double, frequency: Double, tilt: Double, phase: Double)
    let intensity: [Tissue: Double]
    let bias: [Double]
    let noise: Double
    let voxelMM: Double, flipX: Bool

    init(rng: inout SplitMix64) {
        func u(_ lo: Double, _ hi: Double) -> Double { Double(rng.uniform(Float(lo), Float(hi))) }
        center = (0..<3).map { _ in u(-0.05, 0.05) }
        angle = u(-0.2, 0.2)
        semiAxes = [u(0.68, 0.78), u(0.82, 0.92), u(0.72, 0.82)]
        cortex = (0..<3).map { _ in (u(0.01, 0.025), u(3, 9).rounded(), u(0, 2 * .pi)) }
        ribbon = u(0.2, 0.3)
        folds = (u(0.06, 0.1), u(8, 14).rounded(), u(3, 7).rounded(), u(0, 2 * .pi))
        intensity = [.air: 0, .scalp: u(0.55, 0.7), .skull: u(0.04, 0.1), .csf: u(0.08, 0.16),
                     .gray: u(0.45, 0.55), .white: u(0.72, 0.85)]
        bias = (0..<3).map { _ in u(-0.1, 0.1) }
        noise = u(0.015, 0.04)
        voxelMM = u(1.0, 1.4)
        flipX = rng.next() % 2 == 1
    }

    /// Voxel (i, j, k) to RAS millimetres, centred; x stored right to left where `flipX`.
    func affine(side: Int) -> [[Double]] {
        let half = voxelMM * Double(side) / 2
        return [[flipX ? -voxelMM : voxelMM, 0, 0, flipX ? half : -half],
                [0, voxelMM, 0, -half], [0, 0, voxelMM, -half], [0, 0, 0, 1]]
    }

    func tissue(_ p: [Double]) -> Tissue {
        let d = (0..<3).map { p[$0] - center[$0] }
        let hx = (cos(angle) * d[0] + sin(angle) * d[1]) / semiAxes[0]
        let hy = (-sin(angle) * d[0] + cos(angle) * d[1]) / semiAxes[1]
        let hz = d[2] / semiAxes[2]
        let rho = (hx * hx + hy * hy + hz * hz).squareRoot()
        if rho > 1 { return .air }
        if rho > 0.93 { return .scalp }
        if rho > 0.85 { return .skull }
        let phi = atan2(hy, hx), theta = acos(max(-1, min(1, hz / max(rho, 1e-9))))
        // Fading out towards the poles, where the polar angle phi turns on the spot.
        let fold = sin(folds.frequency * phi + folds.phase) * cos(folds.tilt * theta) * sin(theta)
        let outer = min(0.84, 0.8 + 0.01 * fold
                        + cortex.reduce(0) { $0 + $1.amplitude * sin($1.frequency * phi + $1.phase) * sin(theta) })
        let inner = outer - ribbon + folds.amplitude * fold
        if [-0.15, 0.15].contains(where: { side in
            let a = (hx - side) / 0.08, b = (hy + 0.05) / 0.25, c = hz / 0.15
            return a * a + b * b + c * c < 1
        }) { return .csf }
        if rho < inner { return .white }
        let sulcus = fold < -0.85 && rho > inner + 0.03
        return rho < outer && !sulcus ? .gray : .csf
    }

    /// T1 (2 x 2 x 2 samples per voxel, bias field, noise, in [0, 1]) and the gray- and
    /// white-matter maps as the share of each voxel's samples in that tissue.
    func render(side: Int, rng: inout SplitMix64) -> (t1: [Float], gm: [Float], wm: [Float]) {
        let n = side * side * side
        var t1 = [Float](repeating: 0, count: n), gm = t1, wm = t1
        let step = 2 / Double(side)
        let offsets: [Double] = [-0.25, 0.25]
        for k in 0..<side {
            for j in 0..<side {
                for i in 0..<side {
                    let v = i + side * (j + side * k)
                    let x = -1 + (Double(i) + 0.5) * step, y = -1 + (Double(j) + 0.5) * step
                    let z = -1 + (Double(k) + 0.5) * step
                    var sum = 0.0, g = 0, w = 0
                    for oz in offsets { for oy in offsets { for ox in offsets {
                        let t = tissue([x + ox * step, y + oy * step, z + oz * step])
                        sum += intensity[t]!
                        if t == .gray { g += 1 } else if t == .white { w += 1 }
                    } } }
                    let field = 1 + bias[0] * x + bias[1] * y + bias[2] * (x * x + y * y + z * z - 0.5)
                    t1[v] = Float(min(max(sum / 8 * field + noise * Double(rng.normal()), 0), 1))
                    gm[v] = Float(g) / 8
                    wm[v] = Float(w) / 8
                }
            }
        }
        return (t1, gm, wm)
    }
}
