import Foundation

/// Writes a data set in the layout of docs/design.md, section 3 (DIR/MRIs/<stem>_<ix>.npy,
/// DIR/Segmentations/segm_<ix>.npy, optionally DIR/manifest.csv). Everything goes to a staging
/// folder inside DIR first and is moved into place by `commit()`, so a failed or interrupted run
/// leaves DIR as it was: never a partial set mixed with an older one.
public final class SeedLayoutWriter {
    public let directory: String
    /// Names the staging folder: the ranks that write one set together share rank 0's.
    public let token: Int32
    private let staging: String
    private let fm = FileManager.default
    private var committed = false
    private let owner: Bool

    /// Refuses a DIR that already holds MRIs/ unless `overwrite`. Only the `owner` checks, creates
    /// and removes the staging folder; the other ranks of a job write into the owner's (`token`).
    public init(directory: String, overwrite: Bool, token: Int32 = getpid(), owner: Bool = true) throws {
        self.directory = directory
        self.token = token
        self.owner = owner
        staging = directory + "/.unet-dist-staging-\(token)"
        guard owner else { return }
        if fm.fileExists(atPath: directory + "/MRIs") && !overwrite {
            throw FormatError(directory, "already holds a data set (MRIs/); pass --overwrite to replace it")
        }
        do {
            try? fm.removeItem(atPath: staging)
            try fm.createDirectory(atPath: staging + "/MRIs", withIntermediateDirectories: true)
            try fm.createDirectory(atPath: staging + "/Segmentations", withIntermediateDirectories: true)
        } catch {
            throw FormatError(directory, "cannot create the output directory: \(error.localizedDescription)")
        }
    }

    deinit { if owner && !committed { try? fm.removeItem(atPath: staging) } }

    /// The index part of file names: at least 4 digits, more when the set needs them.
    public static func indexText(_ ix: Int, count: Int) -> String {
        let width = max(4, String(max(count - 1, 0)).count)
        let digits = String(ix)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Writes one pair; returns the image's file name.
    @discardableResult
    public func write(stem: String, index: String, image: Image2D, labels: [UInt8]) throws -> String {
        let name = "\(stem)_\(index).npy"
        let shape = [image.height, image.width]
        try stage(NpyArray(float32: image.pixels, shape: shape).encoded(), "MRIs/\(name)")
        try stage(NpyArray(uint8: labels, shape: shape).encoded(), "Segmentations/segm_\(index).npy")
        return name
    }

    /// Gives a staged pair (from `write`) another stem and index; returns the image's new name.
    @discardableResult
    public func rename(stem: String, index: String, toStem: String, toIndex: String) throws -> String {
        let moves = [("MRIs/\(stem)_\(index).npy", "MRIs/\(toStem)_\(toIndex).npy"),
                     ("Segmentations/segm_\(index).npy", "Segmentations/segm_\(toIndex).npy")]
        for (from, to) in moves {
            do {
                try fm.moveItem(atPath: "\(staging)/\(from)", toPath: "\(staging)/\(to)")
            } catch {
                throw FormatError("\(directory)/\(to)", "cannot write: \(error.localizedDescription)")
            }
        }
        return "\(toStem)_\(toIndex).npy"
    }

    /// A plain write: the staging folder is invisible until `commit`, which makes it durable with one
    /// sync() instead of an fsync per file (thousands of those take longer than cutting the slices).
    private func stage(_ data: Data, _ relative: String) throws {
        do {
            try data.write(to: URL(fileURLWithPath: "\(staging)/\(relative)"))
        } catch {
            throw FormatError("\(directory)/\(relative)", "cannot write: \(error.localizedDescription)")
        }
    }

    /// Moves the staged set into DIR, replacing an older MRIs/, Segmentations/ and manifest.csv.
    public func commit(manifest: String? = nil) throws {
        if let manifest { try stage(Data(manifest.utf8), "manifest.csv") }
        sync()  // one flush for all staged files (Glibc does not expose syncfs to Swift)
        let old = directory + "/.unet-dist-replaced-\(getpid())"
        let parts = ["MRIs", "Segmentations", "manifest.csv"]
        do {
            try? fm.removeItem(atPath: old)
            try fm.createDirectory(atPath: old, withIntermediateDirectories: true)
            for p in parts where fm.fileExists(atPath: "\(directory)/\(p)") {
                try fm.moveItem(atPath: "\(directory)/\(p)", toPath: "\(old)/\(p)")
            }
            for p in parts where fm.fileExists(atPath: "\(staging)/\(p)") {
                try fm.moveItem(atPath: "\(staging)/\(p)", toPath: "\(directory)/\(p)")
            }
        } catch {
            throw FormatError(directory, "cannot move the new data set into place: \(error.localizedDescription)")
        }
        committed = true
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
        try? fm.removeItem(atPath: staging)
        try? fm.removeItem(atPath: old)
    }
}
