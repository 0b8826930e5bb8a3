import Foundation

/// A failure that every rank agreed on; its message is ready for the user.
public struct RunError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

extension Communicator {
    /// Every rank learns whether any rank failed, and the first failing rank's message (naming
    /// that rank unless it is rank 0), so that all of them stop together and rank 0 reports one
    /// line. Two collectives, on every rank.
    public func agree(on error: Error?) -> String? {
        var failed = [Double](repeating: 0, count: size)
        if error != nil { failed[rank] = 1 }
        failed.withUnsafeMutableBufferPointer {
            allreduceSum($0.baseAddress!, count: size, what: "agreement on errors")
        }
        guard let first = failed.firstIndex(where: { $0 > 0 }) else { return nil }
        let message = rank == first ? (first == 0 ? "\(error!)" : "rank \(first): \(error!)") : ""
        return String(decoding: broadcast(Data(message.utf8), root: first, what: "error message"), as: UTF8.self)
    }

    /// Runs `body` on every rank, then the ranks agree on the outcome (`agree(on:)`): either every
    /// rank returns its own result, or every rank throws the first failure as a `RunError`.
    /// `body` must make no collective call (a failing rank would skip it).
    @discardableResult
    public func everyRankDoes<T>(_ body: () throws -> T) throws -> T {
        var result: T?, failure: Error?
        do { result = try body() } catch { failure = error }
        if let message = agree(on: failure) { throw RunError(message) }
        return result!
    }

    /// Runs `body` on rank 0 alone (the others return nil), then every rank agrees on its outcome:
    /// all go on, or all throw rank 0's failure as a `RunError`.
    @discardableResult
    public func rootDoes<T>(_ body: () throws -> T) throws -> T? {
        try everyRankDoes { isRoot ? try body() : nil }
    }
}
