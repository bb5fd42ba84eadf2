import SwiftASN1

/// One `-----BEGIN LABEL-----` block of a PEM file.
public struct PEMBlock: Sendable, Equatable {
    public let label: String
    public let der: [UInt8]

    public init(label: String, der: [UInt8]) {
        self.label = label
        self.der = der
    }

    /// The text form, 64 columns, with a trailing newline.
    public var pem: String { PEMDocument(type: label, derBytes: der).pemString + "\n" }

    /// Every block in `text`, in order. Text outside blocks (comments, `Bag Attributes`) is ignored.
    public static func all(in text: String) throws -> [PEMBlock] {
        guard text.contains("-----BEGIN ") else { throw EntraCryptoError.malformedPEM("no '-----BEGIN' line found") }
        do {
            return try PEMDocument.parseMultiple(pemString: text).map { PEMBlock(label: $0.discriminator, der: $0.derBytes) }
        } catch {
            throw EntraCryptoError.malformedPEM("the PEM framing or its base64 body is broken (truncated file?)")
        }
    }

    /// Exactly one block, whose label must be in `accepting`.
    static func single(in text: String, accepting labels: [String]) throws -> PEMBlock {
        let blocks = try all(in: text)
        guard let first = blocks.first else { throw EntraCryptoError.malformedPEM("no PEM block found") }
        guard labels.contains(first.label) else { throw EntraCryptoError.unexpectedPEMLabel(found: first.label, expected: labels) }
        guard blocks.count == 1 else { throw EntraCryptoError.malformedPEM("expected one PEM block, found \(blocks.count)") }
        return first
    }
}
