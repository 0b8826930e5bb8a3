import Foundation

extension Communicator {
    /// Every rank learns whether any rank failed, and the first failing rank's message (naming
    /// that rank unless it is rank 0), so that all of them stop together and rank 0 reports one
    /// line. Two collectives, on every rank.
    public func agree(on error: Error?) -> String? {
        var failed = [Double](repeating: 0, count: size)
        if error != nil { failed[rank] = 1 }
        failed.withUnsafeMutableBufferPointer { allreduceSum($0.baseAddress!, count: size, what: "agreement on errors") }
        guard let first = failed.firstIndex(where: { $0 > 0 }) else { return nil }
        let message = rank == first ? (first == 0 ? "\(error!)" : "rank \(first): \(error!)") : ""
        return String(decoding: broadcast(Data(message.utf8), root: first, what: "error message"), as: UTF8.self)
    }
}
