import Foundation
import TestSupport
import XCTest

/// `launch/install.sh PREFIX` puts a binary on PATH that mpirun finds by name, and that needs no
/// Swift toolchain beside it.
final class InstallTests: ScratchTestCase {
    let repo = URL(fileURLWithPath: fixturesDirectory).deletingLastPathComponent().deletingLastPathComponent().path

    func testInstalledBinaryRunsUnderMpirunByName() throws {
        let prefix = try scratchDirectory("prefix")
        let install = try shell("\(repo)/launch/install.sh \(prefix)", timeout: 900)
        XCTAssertEqual(install.status, 0, install.stdout + install.stderr)
        XCTAssertTrue(install.stdout.contains("installed \(prefix)/bin/unet-dist (0.1.0)"), install.stdout)
        let env = ["PATH": prefix + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
        let r = try shell("mpirun --allow-run-as-root --oversubscribe -n 2 unet-dist --version", environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "0.1.0\n0.1.0\n")
        let libraries = try shell("ldd \(prefix)/bin/unet-dist")
        XCTAssertFalse(libraries.stdout.contains("libswiftCore"), "the Swift runtime is linked in:\n\(libraries.stdout)")
        XCTAssertTrue(libraries.stdout.contains("libmpi"), libraries.stdout)
    }
}
