import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Runs external programs (openssl, the Python verifiers) from tests.
public enum Tools {
    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// The package root, found from this file's path.
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The Python interpreter with `cryptography` (and PyJWT / MSAL when the test script set them up):
    /// `$KEYROLL_PYTHON`, else the package's `.venv-py`, else `python3`.
    public static let python: String = {
        if let p = ProcessInfo.processInfo.environment["KEYROLL_PYTHON"], !p.isEmpty { return p }
        let venv = packageRoot + "/.venv-py/bin/python"
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : "/usr/bin/env python3"
    }()

    @discardableResult
    public static func run(_ argv: [String], stdin: [UInt8]? = nil, environment: [String: String]? = nil) throws -> Result {
        let p = Process()
        var args = argv
        if args[0].hasPrefix("/usr/bin/env ") { args = ["/usr/bin/env", String(args[0].dropFirst(13))] + args.dropFirst() }
        p.executableURL = URL(fileURLWithPath: args[0].hasPrefix("/") ? args[0] : "/usr/bin/env")
        p.arguments = args[0].hasPrefix("/") ? Array(args.dropFirst()) : args
        if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(Data(stdin)) }
        try inp.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// The same, from async code: runs on a Dispatch thread, because a cooperative thread blocked in
    /// `waitUntilExit` cannot serve the in-process emulator the subprocess is talking to (two such
    /// tests in parallel deadlock the 2-thread pool on a 2-core machine).
    public static func run(_ argv: [String], stdin: [UInt8]? = nil, environment: [String: String]? = nil) async throws -> Result {
        try await withCheckedThrowingContinuation { cont in
            DispatchQueue.global().async { cont.resume(with: Swift.Result { try run(argv, stdin: stdin, environment: environment) as Result }) }
        }
    }

    /// Runs a Python script from Tests/python and parses its JSON output.
    public static func python(_ script: String, _ args: [String]) throws -> JSONValue {
        let r = try run([python, packageRoot + "/Tests/python/" + script] + args)
        guard r.status == 0 else { throw ToolError("python \(script) failed (\(r.status)): \(r.stderr.suffix(2000))") }
        return try JSONValue.parse(Array(r.stdout.utf8), maxDepth: 64)
    }

    /// A fresh private temporary folder.
    public static func temporaryDirectory(_ prefix: String = "keyroll-test") throws -> String {
        let path = NSTemporaryDirectory() + "/\(prefix)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return path
    }

    public static func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }
}

public struct ToolError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

extension Tools {
    /// True when the test Python has Microsoft's client libraries (scripts/test installs them).
    public static let hasMicrosoftClients: Bool = {
        (try? run([python, "-c", "import msal, azure.identity, msgraph, jwt"]).status) == 0
    }()
}
