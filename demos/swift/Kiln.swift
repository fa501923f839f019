// Kiln from Swift: a thin, idiomatic wrapper over libkiln's C ABI
// (ffi/include/kiln.h, imported through a module map or a bridging header;
// link libkiln.a built for the Apple target).
//
// NOT BUILT OR RUN HERE: this machine has no Swift toolchain. It shows the
// calls an iOS/macOS app makes; the C example (demos/c/example.c) is the
// tested program that makes the same calls.
//
//     let model = try KilnModel(artifact: Data(contentsOf: url))
//     let session = try KilnSession(model: model)
//     let scores = try session.run(features, shape: [1, 49, 10, 1])

import Foundation

/// A failed call: libkiln's status (the kiln CLI's exit codes) and message.
public struct KilnError: Error, CustomStringConvertible {
    public let status: KilnStatus
    public let message: String
    public var description: String { "\(message) (status \(status.rawValue))" }
}

private func check(_ status: KilnStatus) throws {
    guard status == KILN_STATUS_OK else {
        throw KilnError(status: status, message: String(cString: kiln_last_error()))
    }
}

/// One input or output as the model declares it (-1: the batch dimension).
public struct KilnTensorDescription {
    public let name: String
    public let dtype: KilnDType
    public let shape: [Int64]
}

/// A loaded model: immutable, shareable across threads.
public final class KilnModel {
    fileprivate let handle: OpaquePointer

    /// Loads and checks a `.kiln` artifact (copied; `artifact` may go away).
    public init(artifact: Data) throws {
        var out: OpaquePointer?
        try artifact.withUnsafeBytes { raw in
            try check(kiln_model_load(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &out))
        }
        handle = out!
    }

    deinit { kiln_model_free(handle) }

    public var inputs: [KilnTensorDescription] {
        (0..<kiln_model_input_count(handle)).compactMap { describe(kiln_model_input, $0) }
    }

    public var outputs: [KilnTensorDescription] {
        (0..<kiln_model_output_count(handle)).compactMap { describe(kiln_model_output, $0) }
    }

    private func describe(
        _ get: (OpaquePointer?, Int, UnsafeMutablePointer<KilnTensorInfo>?) -> KilnStatus,
        _ index: Int
    ) -> KilnTensorDescription? {
        var info = KilnTensorInfo()
        guard get(handle, index, &info) == KILN_STATUS_OK else { return nil }
        let dims = withUnsafeBytes(of: info.dims) { Array($0.bindMemory(to: Int64.self)) }
        return KilnTensorDescription(
            name: String(cString: info.name), dtype: info.dtype, shape: Array(dims.prefix(info.rank)))
    }
}

/// One thread's runs of a model (it keeps the model alive).
public final class KilnSession {
    private let handle: OpaquePointer

    public init(model: KilnModel) throws {
        var out: OpaquePointer?
        try check(kiln_session_new(model.handle, &out))
        handle = out!
    }

    deinit { kiln_session_free(handle) }

    /// Runs a model with one float32 input; returns output 0 as floats.
    /// Bad input (shape, NaN, declared range) throws with the reason.
    public func run(_ input: [Float], shape: [Int]) throws -> [Float] {
        try shape.withUnsafeBufferPointer { dims in
            try input.withUnsafeBytes { bytes in
                var x = KilnTensor(
                    dtype: KILN_D_TYPE_F32, rank: dims.count, dims: dims.baseAddress,
                    data: bytes.bindMemory(to: UInt8.self).baseAddress, byte_len: bytes.count)
                try check(kiln_session_run(handle, &x, 1))
            }
        }
        var out = KilnOutput()
        try check(kiln_session_output(handle, 0, &out))
        guard out.dtype == KILN_D_TYPE_F32 else {
            throw KilnError(status: KILN_STATUS_USAGE, message: "output 0 is not float32")
        }
        let raw = UnsafeRawBufferPointer(start: out.data, count: out.byte_len)
        return Array(raw.bindMemory(to: Float.self))
    }
}
